"""Retention: deleting (or archiving, then deleting) rows older than their retention, in small batches.

The request log grows by a row per request; without retention it outgrows everything else in
the database. `prune()` deletes the rows of one `Target` older than its retention in batches of
consecutive primary keys (`DELETE ... WHERE id >= lo AND id < hi AND created_at < cutoff`, each in
its own short transaction, with a pause between batches): every batch is an index range, so no
batch rescans what an earlier one deleted, no lock is held for long, and the writers of new rows
(which only insert past the range) never wait. `--archive` writes each batch's rows to a gzipped
JSON-lines file, flushed to disk before the batch is deleted.

The daily roll-ups (`UsageDaily`, `LatencyDaily`), which the dashboard, `/api/usage/` and the
budgets read, are not targets: usage and spend stay whole after the rows behind them are gone.

Targets: the request log and its set-aside rows (GATEWAY_LOG_RETENTION_DAYS), and the stored
responses of the Responses API, which carry their own expiry (`expires_at`, set from
GATEWAY_RESPONSES_RETENTION_DAYS when stored) and go once it has passed. Another module with
rows of its own registers them the same way:

    retention.register(retention.Target("things", "app.Thing", days=lambda: settings.THING_DAYS))

`manage.py prune_logs` runs every registered target (the compose `retention` service runs it
once a day; cron works as well).
"""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from django.apps import apps
from django.conf import settings
from django.db import models, transaction
from django.utils import timezone


@dataclass(frozen=True)
class Target:
    """Rows of one model deleted once `field` is older than `days()` days (0: kept forever), or, for
    an `expires` target, once the time in `field` has passed (a row without one never expires)."""

    name: str
    model: str  # "app_label.ModelName"
    days: Callable[[], float]
    field: str = "created_at"
    expires: bool = False

    def model_class(self) -> type[models.Model]:
        return apps.get_model(self.model)


TARGETS: dict[str, Target] = {}


def register(target: Target) -> Target:
    TARGETS[target.name] = target
    return target


register(Target("request_log", "completions.RequestLog", lambda: settings.GATEWAY_LOG_RETENTION_DAYS))
register(Target("set_aside_log_rows", "completions.SetAsideLogRow", lambda: settings.GATEWAY_LOG_RETENTION_DAYS))
register(
    Target(
        "stored_responses",
        "completions.StoredResponse",
        lambda: settings.GATEWAY_RESPONSES_RETENTION_DAYS,
        field="expires_at",
        expires=True,
    )
)


@dataclass
class Pruned:
    target: str
    cutoff: datetime | None
    deleted: int = 0
    batches: int = 0
    seconds: float = 0.0
    archive: Path | None = None
    batch_seconds: list[float] = field(default_factory=list)  # each batch's transaction


def _integer_pk(model: type[models.Model]) -> bool:
    return isinstance(model._meta.pk, (models.AutoField, models.BigAutoField, models.IntegerField))


class _Archive:
    """A gzipped JSON-lines file, each batch flushed to disk before it is deleted."""

    def __init__(self, directory: Path, target: Target, cutoff: datetime) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        self.path = directory / f"{target.name}-before-{cutoff:%Y%m%d}-{stamp}.jsonl.gz"
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed by close()
        self._gzip = gzip.GzipFile(fileobj=self._file, mode="ab")

    def write(self, rows: list[dict[str, Any]]) -> None:
        self._gzip.write(b"".join(orjson.dumps(row, default=str) + b"\n" for row in rows))
        self._gzip.flush()
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._gzip.close()
        self._file.close()


def prune(
    target: Target,
    days: float | None = None,
    *,
    batch_size: int = 5000,
    pause: float = 0.05,
    archive_dir: Path | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> Pruned:
    """Delete (after archiving, with `archive_dir`) the target's rows older than `days` (default: its
    setting). With `dry_run`, count them instead."""
    now = now or timezone.now()
    if target.expires:
        cutoff = now  # each row's own expiry; `days` only set it when the row was stored
    else:
        days = target.days() if days is None else days
        if days <= 0:
            return Pruned(target.name, None)
        cutoff = now - timedelta(days=days)
    model = target.model_class()
    old = model._default_manager.filter(**{f"{target.field}__lt": cutoff})
    result = Pruned(target.name, cutoff)
    if dry_run:
        result.deleted = old.count()
        return result
    archive = _Archive(archive_dir, target, cutoff) if archive_dir is not None else None
    started = time.monotonic()
    try:
        if _integer_pk(model):
            _prune_by_range(model, target, cutoff, old, batch_size, pause, archive, result)
        else:
            _prune_by_age(model, target, old, batch_size, pause, archive, result)
    finally:
        if archive is not None:
            archive.close()
            result.archive = archive.path
    result.seconds = time.monotonic() - started
    return result


def _prune_by_range(
    model: type[models.Model],
    target: Target,
    cutoff: datetime,
    old: models.QuerySet[Any],
    batch_size: int,
    pause: float,
    archive: _Archive | None,
    result: Pruned,
) -> None:
    """Walk the primary key from the oldest old row to the newest, one range of `batch_size` keys per
    transaction. Old rows are mostly the lowest keys, but not only: a long request's row, or rows
    written late (replayed after an outage), sit among newer ones; their ranges are walked too, and
    the age condition leaves the newer rows in them alone."""
    bounds = old.aggregate(low=models.Min("pk"), high=models.Max("pk"))
    if bounds["low"] is None:
        return
    low, end = bounds["low"], bounds["high"] + 1
    while low < end:
        high = min(low + batch_size, end)
        batch = old.filter(pk__gte=low, pk__lt=high)
        t0 = time.monotonic()
        with transaction.atomic():
            if archive is not None:
                rows = list(batch.values())
                if rows:
                    archive.write(rows)
            deleted = batch._raw_delete(batch.db)
        result.batch_seconds.append(time.monotonic() - t0)
        result.deleted += deleted
        result.batches += 1
        low = high
        if deleted and pause:
            time.sleep(pause)


def _prune_by_age(
    model: type[models.Model],
    target: Target,
    old: models.QuerySet[Any],
    batch_size: int,
    pause: float,
    archive: _Archive | None,
    result: Pruned,
) -> None:
    """For keys that aren't integers: the oldest `batch_size` rows at a time."""
    while True:
        t0 = time.monotonic()
        with transaction.atomic():
            keys = list(old.order_by(target.field).values_list("pk", flat=True)[:batch_size])
            if not keys:
                return
            batch = model._default_manager.filter(pk__in=keys)
            if archive is not None:
                archive.write(list(batch.values()))
            deleted = batch._raw_delete(batch.db)
        result.batch_seconds.append(time.monotonic() - t0)
        result.deleted += deleted
        result.batches += 1
        if pause:
            time.sleep(pause)
