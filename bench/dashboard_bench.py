"""Dashboard benchmark: how long the admin usage dashboard takes with a million log rows.

Creates a fresh database (a temporary SQLite file, or $DATABASE_URL), writes
N request-log rows (default 1,000,000) spread over 90 days, 40 keys and 8
models through the real log writer (so the daily roll-ups are maintained the
way production maintains them), then times the dashboard page as a staff user
sees it, the data behind it, and the management API's usage endpoint.

    python bench/dashboard_bench.py [--rows 1000000] [--days 90] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch", type=int, default=5000)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="gw-dash-")
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{tmp}/dash.sqlite3")
    os.environ["DJANGO_SETTINGS_MODULE"] = "compat_api.settings"
    os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from completions.keys import create_api_key
    from completions.models import RequestLog, UsageDaily
    from completions.recorder import LogWriter, RequestRecord
    from completions.usage import rollup

    call_command("migrate", verbosity=0)
    User = get_user_model()
    users = [User.objects.create_user(f"bench-{i}") for i in range(10)]
    keys = [create_api_key(users[i % 10], f"key-{i}")[0] for i in range(40)]
    models = [
        "gpt-4o",
        "gpt-4o-mini",
        "gemini-2.5-flash",
        "gemini-2.5-pro",
        "claude-sonnet-4-6",
        "claude-haiku-4-5",
        "llama-local",
        "mock-gpt-model",
    ]
    prices = {
        m: (Decimal(random.choice(["0.1", "0.3", "1.25", "3"])), Decimal(random.choice(["0.4", "2.5", "10", "15"])))
        for m in models
    }
    rng = random.Random(1)
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    writer = LogWriter()
    writer.hooks.append(rollup)

    print(f"writing {args.rows:,} log rows through the log writer (batches of {args.batch}) ...", flush=True)
    started = time.perf_counter()
    written = 0
    while written < args.rows:
        batch = []
        for i in range(min(args.batch, args.rows - written)):
            key = rng.choice(keys)
            model = rng.choice(models)
            status = 200 if rng.random() > 0.03 else rng.choice([400, 429, 502])
            prompt = rng.randint(5, 2000) if status == 200 else 0
            completion = rng.randint(1, 800) if status == 200 else 0
            batch.append(
                RequestRecord(
                    request_id=f"req_bench_{written + i}",
                    created_at=end - timedelta(seconds=rng.randint(0, args.days * 86400 - 1)),
                    key_id=key.pk,
                    key_prefix=key.prefix,
                    user_id=key.user_id,
                    model=model,
                    provider="openai",
                    upstream_model=model,
                    status_code=status,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    input_price=prices[model][0],
                    output_price=prices[model][1],
                    latency_ms=int(rng.lognormvariate(6, 0.8)),
                    stream=rng.random() < 0.5,
                )
            )
        writer.write(batch)
        written += len(batch)
        if written % 100_000 == 0:
            print(f"  {written:,} rows, {written / (time.perf_counter() - started):,.0f} rows/s", flush=True)
    write_seconds = time.perf_counter() - started
    log_count = RequestLog.objects.count()
    rollup_rows = UsageDaily.objects.count()

    staff = User.objects.create_superuser("bench-admin", "b@example.com", "pw")
    client = Client()
    client.force_login(staff)

    def timed(url: str) -> list[float]:
        out = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            response = client.get(url)
            assert response.status_code == 200, response.status_code
            out.append(time.perf_counter() - t)
        return out

    client.get(f"/admin/usage/?days={args.days}")  # warm up
    results = {
        f"dashboard page, {args.days} days": timed(f"/admin/usage/?days={args.days}"),
        "dashboard page, 30 days": timed("/admin/usage/?days=30"),
        "API /api/usage/ by day, 90 days": timed(
            "/api/usage/?group_by=day&start=" + (end - timedelta(days=89)).date().isoformat()
        ),
        "API keys changelist (month usage column)": timed("/admin/completions/apikey/"),
    }
    engine = "PostgreSQL" if "postgres" in os.environ["DATABASE_URL"] else "SQLite"
    print(
        f"\n{engine}: {log_count:,} log rows, {rollup_rows:,} roll-up rows; written in {write_seconds:.1f} s "
        f"({log_count / write_seconds:,.0f} rows/s through the log writer)\n"
    )
    print("| view | median | max |")
    print("|---|---:|---:|")
    for label, times in results.items():
        print(f"| {label} | {statistics.median(times) * 1000:.0f} ms | {max(times) * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
