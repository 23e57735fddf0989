"""The log writer's batches as the database sees them: one multi-row INSERT per batch on PostgreSQL
(one executemany on SQLite), every column as the record holds it, each uid once, and roll-ups that
equal the rows they count. Run on SQLite by default and on PostgreSQL with DATABASE_URL."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection  # noqa: F401  (read by postgres_only)

from completions import multirow
from completions.keys import create_api_key
from completions.models import LatencyDaily, RequestLog, UsageDaily
from completions.recorder import LOG_COLUMNS, LogWriter, RequestRecord, to_values
from completions.usage import UNKNOWN_MODEL, bucket_for, rollup

postgres_only = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="PostgreSQL's multi-row path")


def record(request_id: str, **fields: Any) -> RequestRecord:
    fields.setdefault("model", "mock-gpt-model")
    return RequestRecord(request_id=request_id, **fields)


class Seen:
    """A hook that keeps every record it was handed."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    def __call__(self, batch: list[RequestRecord]) -> None:
        self.records += batch


def test_the_insert_fills_every_request_log_column() -> None:
    # A column added to RequestLog and not to the writer would be left to its default in every row.
    fields = {f.attname for f in RequestLog._meta.concrete_fields if not f.primary_key}
    assert sorted(LOG_COLUMNS) == sorted(fields) and len(set(LOG_COLUMNS)) == len(LOG_COLUMNS)


def test_a_batch_with_a_logged_uid_and_a_uid_twice_inserts_each_row_once(transactional_db: Any) -> None:
    writer, seen = LogWriter(), Seen()
    writer.hooks.append(seen)
    logged, new, twice = record("logged"), record("new"), record("twice")
    assert writer.write([logged]) == [logged]
    batch = [new, logged, twice, record("twice-again", uid=twice.uid)]
    assert writer.write(batch) == [new, twice]
    assert seen.records == [logged, new, twice]  # the hooks see only rows inserted, each once
    rows = dict(RequestLog.objects.values_list("uid", "request_id"))
    assert rows == {logged.uid: "logged", new.uid: "new", twice.uid: "twice"}
    assert writer.write(batch) == [] and seen.records == [logged, new, twice]


def test_every_column_is_stored_as_the_record_holds_it(transactional_db: Any, user: Any) -> None:
    key, _ = create_api_key(user, "columns")
    full = record(
        "full",
        created_at=datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=UTC),
        key_id=key.id,
        key_prefix=key.prefix,
        user_id=user.id,
        model="m" * 250,  # cut to the column's 200
        provider="openai",
        upstream_model="up",
        route_id=7,
        stream=True,
        status_code=502,
        error_type="upstream_error",
        error_code="bad_gateway",
        error_message="quote ' and backslash \\ and ünïcode ✓",
        prompt_tokens=70_000,
        completion_tokens=3,
        usage_estimated=True,
        input_price=Decimal("0.37"),
        output_price=Decimal("1.11"),
        latency_ms=1234,
        ttft_ms=56,
        finish_reason="length",
        client_disconnected=True,
        attempts=[{"route": "openai:up#1", "status": 502, "ms": 1.5}, {"route": "b", "ok": True}],
        end_user="someone",
        metadata={"team": "a", "nested": {"list": [1, None, "x"], "big": 2**70}},
        request_body={1: "a non-string key", "n": -0.5},  # what orjson can't encode goes by json
        response_text="text",
    )
    bare = record("bare", metadata=None, request_body=None, ttft_ms=None)
    assert LogWriter().write([full, bare]) == [full, bare]
    stored = {row.request_id: row for row in RequestLog.objects.all()}
    expected = to_values(full)
    expected["request_body"] = {"1": "a non-string key", "n": -0.5}  # JSON keys are strings
    got = {name: getattr(stored["full"], name) for name in LOG_COLUMNS}
    assert got == expected
    assert got["model"] == "m" * 200 and got["cost"] == Decimal("0.025903330")
    # None is SQL NULL, not JSON null, as the ORM stores it.
    assert RequestLog.objects.filter(request_id="bare", metadata__isnull=True, request_body__isnull=True).exists()
    assert stored["bare"].ttft_ms is None and stored["bare"].attempts == []


@postgres_only
def test_a_batch_past_one_statement_s_parameters_goes_in_several_in_one_pipeline(
    transactional_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(multirow, "MAX_PARAMETERS", len(LOG_COLUMNS) * 3)  # three rows a statement
    writer, seen = LogWriter(), Seen()
    writer.hooks.append(seen)
    first = [record(f"first-{i}") for i in range(4)]
    assert writer.write(first[:2]) == first[:2]
    batch = [*first, *(record(f"more-{i}") for i in range(7)), first[3]]
    assert writer.write(batch) == batch[2:11]  # four statements: every one's RETURNING rows are read
    assert seen.records == batch[:11]
    assert RequestLog.objects.count() == 11


@pytest.mark.parametrize("statement_rows", ["as many as fit", "a few"])
def test_rollups_of_a_multi_key_batch_equal_the_per_row_sums(
    transactional_db: Any, django_user_model: Any, monkeypatch: pytest.MonkeyPatch, statement_rows: str
) -> None:
    if statement_rows == "a few":  # PostgreSQL: every statement split, all in one pipeline
        monkeypatch.setattr(multirow, "MAX_PARAMETERS", 33)  # 1 log row, 3 usage rows, 8 latency rows
    users = [django_user_model.objects.create_user(f"sums-{i}") for i in range(2)]
    keys = [create_api_key(users[0], "a")[0], create_api_key(users[0], "b")[0], create_api_key(users[1], "c")[0]]
    day = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)

    def batch(n: int, prefix: str) -> list[RequestRecord]:
        out = []
        for i in range(n):
            key = keys[i % 3] if i % 7 else None  # some requests had no key
            out.append(
                record(
                    f"{prefix}-{i}",
                    created_at=day + timedelta(minutes=45 * (i % 2)),  # two UTC days
                    key_id=key.id if key else None,
                    user_id=key.user_id if key else None,
                    model=["mock-gpt-model", "no-such-model"][i % 2 if i % 5 else 0],
                    status_code=500 if i % 4 == 0 else 200,
                    prompt_tokens=i,
                    completion_tokens=2 * i + 1,
                    input_price=Decimal("0.37"),
                    output_price=Decimal("1.11"),
                    latency_ms=(i * 37) % 4000,
                )
            )
        return out

    writer = LogWriter()
    writer.hooks.append(rollup)
    first, second = batch(60, "one"), batch(45, "two")
    assert writer.write(first) == first
    assert writer.write(second) == second  # the same roll-up rows again: the upserts add up
    assert writer.write(first[:10]) == []  # already counted

    usage: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * 8)
    latency: dict[tuple[Any, ...], int] = defaultdict(int)
    for r in first + second:
        model = r.model if r.model == "mock-gpt-model" else UNKNOWN_MODEL
        sums = usage[(r.created_at.date(), r.key_id or 0, model)]
        for i, value in enumerate(
            (1, r.is_error, r.prompt_tokens, r.completion_tokens, r.total_tokens, r.cost_nanos, r.latency_ms)
        ):
            sums[i] += value
        sums[7] = r.user_id or 0
        latency[(r.created_at.date(), model, bucket_for(r.latency_ms))] += 1
    assert len(usage) > 10 and len({k[1] for k in usage}) == 4  # several rows a batch: keys, no key, days, models
    stored = {
        (u.day, u.key_id, u.model): [
            u.requests,
            u.errors,
            u.prompt_tokens,
            u.completion_tokens,
            u.total_tokens,
            u.cost_nanos,
            u.latency_ms_total,
            u.user_id,
        ]
        for u in UsageDaily.objects.all()
    }
    assert stored == dict(usage)
    assert {(h.day, h.model, h.bucket_ms): h.count for h in LatencyDaily.objects.all()} == dict(latency)
