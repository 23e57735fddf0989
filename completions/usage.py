"""Usage accounting: the daily roll-ups kept beside the request log, and the read-side selectors.

`rollup()` runs in the log writer's transaction for every batch of rows, so a
row and its share of the roll-ups are committed together: totals never need
a scan of the log, and the two always agree. The selectors are what the
management API, the admin and the dashboard read.

Only models in the route table get roll-up rows of their own: a request for a
name that no route serves is logged with that name, but counted under
UNKNOWN_MODEL, so made-up names can't grow the roll-ups or crowd the dashboard.
"""

from __future__ import annotations

import bisect
import math
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet, Sum
from django.utils import timezone

from . import multirow
from .models import LATENCY_BUCKETS_MS, NANOS, LatencyDaily, UsageDaily
from .multirow import Values
from .recorder import RequestRecord
from .routing import BUILTIN_MODELS, RouteTable, builtin_routes, database_routes, route_version

# The roll-up bucket of every request whose model no route serves.
UNKNOWN_MODEL = "(unknown)"

SUM_FIELDS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_nanos",
    "latency_ms_total",
)


def bucket_for(latency_ms: int) -> int:
    """The latency bucket (its upper bound in ms; 0 above the largest) a request falls in."""
    i = bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)
    return LATENCY_BUCKETS_MS[i] if i < len(LATENCY_BUCKETS_MS) else 0


def _utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date() if moment.tzinfo else moment.date()


class KnownModels:
    """The public model ids of the route table, as the log writer's thread needs them.

    Built like the router's own table (built-in routes plus ModelRoute rows) and rebuilt when the
    route version changes (the row every worker polls), when the provider variables that enable
    built-in routes change, or after MAX_AGE seconds. The version is read at most once every
    GATEWAY_ROUTE_CHECK_SECONDS, so a busy writer does not query it per batch.
    """

    MAX_AGE = 60.0
    _ENV = ("GATEWAY_BUILTIN_ROUTES", *(env_name for env_name, _ in BUILTIN_MODELS.values()))

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: frozenset[str] = frozenset()
        self._stamp: tuple[Any, ...] | None = None
        self._built = self._checked = -math.inf
        self._unknown: set[str] = set()  # names looked up since the last build and not found

    def get(self) -> frozenset[str]:
        now = time.monotonic()
        with self._lock:
            if now - self._checked >= settings.GATEWAY_ROUTE_CHECK_SECONDS:
                self._checked = now
                stamp = (route_version(), *(bool(os.environ.get(name)) for name in self._ENV))
                if stamp != self._stamp or now - self._built > self.MAX_AGE:
                    self._rebuild(stamp, now)
            return self._ids

    def get_including(self, names: set[str]) -> frozenset[str]:
        """The known ids, brought up to date first when `names` holds one they lack: a route added
        a moment ago must not roll up as "(unknown)". That costs one read of the route version;
        a rebuild follows only when the version moved or a name was never looked up before, so a
        tenant's made-up names cost at most one rebuild each."""
        known = self.get()
        missing = names - known
        if not missing:
            return known
        with self._lock:
            stamp = (route_version(), *(bool(os.environ.get(name)) for name in self._ENV))
            if stamp != self._stamp or missing - self._unknown:
                self._rebuild(stamp, time.monotonic())
            self._unknown |= missing - self._ids
            if len(self._unknown) > 10_000:
                self._unknown = set()
            return self._ids

    def _rebuild(self, stamp: tuple[Any, ...] | None, now: float) -> None:
        self._ids = frozenset(RouteTable.build(builtin_routes(), database_routes()).model_ids())
        self._stamp, self._built = stamp, now
        self._unknown = set()


known_models = KnownModels()


def aggregate(
    records: Iterable[RequestRecord], known: frozenset[str] | None = None
) -> tuple[dict[tuple[Any, ...], list[int]], dict[tuple[Any, ...], int]]:
    """Sum a batch per (day, key, model) and per (day, model, latency bucket); models not in
    `known` (default: the route table's) are summed under UNKNOWN_MODEL."""
    records = list(records)
    if known is None:
        known = known_models.get_including({r.model for r in records})
    usage: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * (len(SUM_FIELDS) + 1))
    latency: dict[tuple[Any, ...], int] = defaultdict(int)
    for r in records:
        day = _utc_day(r.created_at)
        model = r.model if r.model in known else UNKNOWN_MODEL
        sums = usage[(day, r.key_id or 0, model)]
        sums[0] += 1
        sums[1] += 1 if r.is_error else 0
        sums[2] += r.prompt_tokens
        sums[3] += r.completion_tokens
        sums[4] += r.total_tokens
        sums[5] += r.cost_nanos
        sums[6] += r.latency_ms
        sums[7] = r.user_id or sums[7]
        latency[(day, model, bucket_for(r.latency_ms))] += 1
    return usage, latency


def _upsert(table: str, keys: tuple[str, ...], sums: tuple[str, ...], also: tuple[str, ...] = ()) -> Values:
    """INSERT ... ON CONFLICT DO UPDATE adding `sums` to a roll-up row (and setting `also`)."""
    columns = keys + sums + also
    updates = [f"{c} = {table}.{c} + excluded.{c}" for c in sums] + [f"{c} = excluded.{c}" for c in also]
    return Values(
        f"INSERT INTO {table} ({', '.join(columns)})",
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {', '.join(updates)}",
        len(columns),
    )


_USAGE = _upsert(UsageDaily._meta.db_table, ("day", "key_id", "model"), SUM_FIELDS, ("user_id",))
_LATENCY = _upsert(LatencyDaily._meta.db_table, ("day", "model", "bucket_ms"), ("count",))


def rollup(records: list[RequestRecord]) -> None:
    """Request-log hook: add a batch to the daily roll-ups with atomic increments (any number of writers).

    The batch is summed here first, so each roll-up row it touches is upserted once. On PostgreSQL
    that is one multi-row upsert per roll-up table, both sent in one round trip. The rows go in
    sorted, so concurrent writers lock the rows they share in the same order (no deadlock)."""
    usage, latency = aggregate(records)
    usage_rows = [(day, key, model, *sums[:-1], sums[-1]) for (day, key, model), sums in sorted(usage.items())]
    latency_rows = [(day, model, bucket, count) for (day, model, bucket), count in sorted(latency.items())]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            multirow.execute(cursor, [(_USAGE, usage_rows), (_LATENCY, latency_rows)])
        else:
            cursor.executemany(_USAGE.single(), usage_rows)
            cursor.executemany(_LATENCY.single(), latency_rows)


# ---- selectors -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Whose usage to read: everything (staff), one user's, one key's; optionally one model."""

    user_id: int | None = None
    key_id: int | None = None
    model: str | None = None

    def filter(self, qs: QuerySet[UsageDaily]) -> QuerySet[UsageDaily]:
        if self.user_id is not None:
            qs = qs.filter(user_id=self.user_id)
        if self.key_id is not None:
            qs = qs.filter(key_id=self.key_id)
        if self.model:
            qs = qs.filter(model=self.model)
        return qs


def _totals(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {f: int(row.get(f) or 0) for f in SUM_FIELDS}
    out["cost"] = Decimal(out.pop("cost_nanos")) / NANOS
    out["error_rate"] = out["errors"] / out["requests"] if out["requests"] else 0.0
    out["avg_latency_ms"] = out.pop("latency_ms_total") / out["requests"] if out["requests"] else 0.0
    return out


def usage_rows(
    start: date, end: date, scope: Scope = Scope(), group_by: tuple[str, ...] = ("day",)
) -> list[dict[str, Any]]:
    """Sums between `start` and `end` (inclusive) grouped by any of day, key_id, user_id, model."""
    qs = scope.filter(UsageDaily.objects.filter(day__gte=start, day__lte=end))
    rows = qs.values(*group_by).annotate(**{f: Sum(f) for f in SUM_FIELDS}).order_by(*group_by)
    return [{**{g: row[g] for g in group_by}, **_totals(row)} for row in rows]


def usage_total(start: date, end: date, scope: Scope = Scope()) -> dict[str, Any]:
    row = scope.filter(UsageDaily.objects.filter(day__gte=start, day__lte=end)).aggregate(
        **{f: Sum(f) for f in SUM_FIELDS}
    )
    return _totals(row)


def top(
    start: date, end: date, by: str, scope: Scope = Scope(), limit: int = 10, order: str = "cost_nanos"
) -> list[dict[str, Any]]:
    """The `limit` largest keys or models in the range, by cost then requests."""
    qs = scope.filter(UsageDaily.objects.filter(day__gte=start, day__lte=end))
    rows = qs.values(by).annotate(**{f: Sum(f) for f in SUM_FIELDS}).order_by(f"-{order}", "-requests")[:limit]
    return [{by: row[by], **_totals(row)} for row in rows]


def latency_percentiles(
    start: date, end: date, model: str | None = None, percentiles: Iterable[int] = (50, 90, 99)
) -> dict[int, int | None]:
    """Latency percentiles (ms, the upper bound of the bucket they fall in) from the histogram roll-up."""
    qs = LatencyDaily.objects.filter(day__gte=start, day__lte=end)
    if model:
        qs = qs.filter(model=model)
    counts = {row["bucket_ms"]: row["n"] for row in qs.values("bucket_ms").annotate(n=Sum("count"))}
    ordered = [(b, counts.get(b, 0)) for b in LATENCY_BUCKETS_MS] + [(0, counts.get(0, 0))]
    total = sum(n for _, n in ordered)
    out: dict[int, int | None] = {}
    for p in percentiles:
        if not total:
            out[p] = None
            continue
        threshold, seen = total * p / 100, 0
        for bucket, n in ordered:
            seen += n
            if seen >= threshold:
                out[p] = bucket if bucket else LATENCY_BUCKETS_MS[-1] * 2
                break
    return out


def month_start(today: date | None = None) -> date:
    today = today or timezone.now().date()
    return today.replace(day=1)


def period_start(period: str, today: date | None = None) -> date | None:
    """First day counted by a budget period (None: since the beginning)."""
    return month_start(today) if period == "month" else None


def spent(kind: str, owner_id: int, period: str, today: date | None = None) -> tuple[int, int]:
    """(tokens, cost in nanos) a key (`kind` "key") or a user's keys together ("user") used in the
    current budget period, from the roll-ups."""
    qs = UsageDaily.objects.filter(**{"key_id" if kind == "key" else "user_id": owner_id})
    start = period_start(period, today)
    if start is not None:
        qs = qs.filter(day__gte=start)
    row = qs.aggregate(tokens=Sum("total_tokens"), cost=Sum("cost_nanos"))
    return int(row["tokens"] or 0), int(row["cost"] or 0)
