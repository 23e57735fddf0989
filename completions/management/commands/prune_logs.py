"""python manage.py prune_logs: delete request-log rows (and every registered target) past retention.

Rows older than GATEWAY_LOG_RETENTION_DAYS (stored responses: once expired) are deleted
in batches of consecutive keys, each its own short transaction (completions/retention.py);
the daily roll-ups stay, so the dashboard, /api/usage/ and budgets are unchanged. `--archive
DIR` first writes the rows to gzipped JSON lines there. `--every SECONDS` repeats forever (the
compose `retention` service); otherwise it runs once (cron).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from completions import retention


class Command(BaseCommand):
    help = "Delete (or archive, then delete) request-log rows and other registered rows older than their retention."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days", type=float, default=None, help="Override the retention (days) of every target by age."
        )
        parser.add_argument(
            "--target", action="append", default=None, help=f"Only these targets (of {', '.join(retention.TARGETS)})."
        )
        parser.add_argument("--batch-size", type=int, default=5000, help="Primary keys per batch (transaction).")
        parser.add_argument("--pause", type=float, default=0.05, help="Seconds to wait between batches.")
        parser.add_argument(
            "--archive", default=None, help="Write the rows to gzipped JSON lines in this directory first."
        )
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")
        parser.add_argument("--every", type=float, default=None, help="Run again every this many seconds, forever.")

    def handle(self, *args: Any, **options: Any) -> None:
        names = options["target"] or list(retention.TARGETS)
        unknown = [name for name in names if name not in retention.TARGETS]
        if unknown:
            raise CommandError(f"Unknown target(s) {', '.join(unknown)}; known: {', '.join(retention.TARGETS)}.")
        if options["days"] is not None and options["days"] < 0:
            raise CommandError("--days must be 0 (keep everything) or more.")
        while True:
            for name in names:
                self.run_one(retention.TARGETS[name], options)
            if not options["every"]:
                return
            time.sleep(options["every"])

    def run_one(self, target: retention.Target, options: dict[str, Any]) -> None:
        archive = Path(options["archive"]) if options["archive"] else None
        result = retention.prune(
            target,
            options["days"],
            batch_size=options["batch_size"],
            pause=options["pause"],
            archive_dir=archive,
            dry_run=options["dry_run"],
        )
        if result.cutoff is None:
            self.stdout.write(f"{target.name}: kept forever (retention 0 days)")
            return
        verb = "would delete" if options["dry_run"] else "deleted"
        what = "expired before" if target.expires else "older than"
        line = f"{target.name}: {verb} {result.deleted} rows {what} {result.cutoff:%Y-%m-%d %H:%M} UTC"
        if not options["dry_run"]:
            slowest = max(result.batch_seconds, default=0.0)
            line += f" in {result.batches} batches, {result.seconds:.1f} s (slowest batch {slowest * 1000:.0f} ms)"
        if result.archive is not None:
            line += f"; archived to {result.archive}"
        self.stdout.write(line)
