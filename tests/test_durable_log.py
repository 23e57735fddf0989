"""The request log is durable: a row is written exactly once, whatever happens to the database
or the process in between. These tests need no server (see test_durable_log_e2e.py for the
gateway under gunicorn, with its database stopped and its workers killed)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from completions.models import RequestLog, UsageDaily
from completions.recorder import LogWriter, RequestRecord
from completions.usage import rollup


def records(n: int, prefix: str = "r") -> list[RequestRecord]:
    return [
        RequestRecord(
            request_id=f"{prefix}-{i}",
            model="mock-gpt-model",
            prompt_tokens=3,
            completion_tokens=i,
            input_price=Decimal("2"),
            output_price=Decimal("8"),
            latency_ms=10 + i,
        )
        for i in range(n)
    ]


def assert_rollups_equal_the_log() -> None:
    rows = list(RequestLog.objects.all())
    usage = list(UsageDaily.objects.all())
    assert sum(u.requests for u in usage) == len(rows)
    assert sum(u.total_tokens for u in usage) == sum(r.total_tokens for r in rows)
    assert sum(u.cost_nanos for u in usage) == sum(int(r.cost * 10**9) for r in rows)


def test_a_record_written_twice_is_one_row_counted_once(transactional_db: Any) -> None:
    writer = LogWriter()
    writer.hooks.append(rollup)
    batch = records(5)
    assert writer.write(batch[:3]) == batch[:3]
    # A retry after a commit whose answer was lost, a spool file replayed again: only the new rows count.
    assert writer.write(batch) == batch[3:]
    assert writer.write([batch[4], batch[4]]) == []
    same_client_id = RequestRecord(request_id="r-0", model="mock-gpt-model")  # request_id may repeat; uid never
    assert writer.write([same_client_id]) == [same_client_id]
    assert RequestLog.objects.count() == 6
    assert sorted(RequestLog.objects.values_list("uid", flat=True)) == sorted(r.uid for r in [*batch, same_client_id])
    assert_rollups_equal_the_log()
