"""Retention: `manage.py prune_logs` deletes log rows past their retention in batches and keeps the roll-ups."""

from __future__ import annotations

import gzip
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from django.core.management import call_command
from django.utils import timezone

from completions import retention
from completions.app import make_log_writer
from completions.keys import create_api_key
from completions.models import ModelRoute, RequestLog, SetAsideLogRow, UsageDaily
from completions.recorder import RequestRecord
from completions.usage import spent


@pytest.fixture
def history(transactional_db: Any, django_user_model: Any) -> tuple[Any, list[str], list[str]]:
    """A key with 120 days of rows (one a day, priced) written through the real log writer."""
    ModelRoute.objects.create(model_name="kept-model", provider="mock")
    key, _ = create_api_key(django_user_model.objects.create_user("history"), "k")
    now = timezone.now()
    records = [
        RequestRecord(
            request_id=f"day-{age}",
            created_at=now - timedelta(days=age, minutes=1),
            key_id=key.pk,
            user_id=key.user_id,
            model="kept-model",
            provider="mock",
            prompt_tokens=100,
            completion_tokens=50,
            input_price=Decimal("3"),
            output_price=Decimal("15"),
        )
        for age in range(119, -1, -1)
    ]
    make_log_writer().write(records)
    old = [r.request_id for r in records if (now - r.created_at).days >= 90]
    new = [r.request_id for r in records if (now - r.created_at).days < 90]
    return key, old, new


def usage_totals() -> tuple[int, int, int]:
    rows = UsageDaily.objects.all()
    return sum(r.requests for r in rows), sum(r.total_tokens for r in rows), sum(r.cost_nanos for r in rows)


def test_old_rows_go_in_batches_and_the_rollups_stay(history: tuple[Any, list[str], list[str]]) -> None:
    key, old, new = history
    assert len(old) == 30 and len(new) == 90
    rollups, budget = usage_totals(), spent("key", key.pk, "total")
    out = io.StringIO()
    call_command("prune_logs", "--target", "request_log", "--batch-size", "7", "--pause", "0", stdout=out)
    assert sorted(RequestLog.objects.values_list("request_id", flat=True)) == sorted(new)
    assert "request_log: deleted 30 rows older than" in out.getvalue()
    assert "in 5 batches" in out.getvalue()  # 30 consecutive keys, 7 per batch
    assert usage_totals() == rollups == (120, 120 * 150, rollups[2]) and rollups[2] > 0
    assert spent("key", key.pk, "total") == budget  # a total budget still counts the deleted rows

    call_command("prune_logs", "--target", "request_log", stdout=io.StringIO())  # again: nothing left to do
    assert RequestLog.objects.count() == 90


def test_old_rows_written_after_newer_ones_go_too(history: tuple[Any, list[str], list[str]]) -> None:
    """A row written late (a long stream, a replay after an outage) has a higher key than newer rows."""
    key, _, new = history
    late = RequestRecord(request_id="late", created_at=timezone.now() - timedelta(days=95), key_id=key.pk)
    make_log_writer().write([late])
    call_command("prune_logs", "--target", "request_log", "--batch-size", "1000", "--pause", "0", stdout=io.StringIO())
    assert sorted(RequestLog.objects.values_list("request_id", flat=True)) == sorted(new)


def test_archive_then_delete(history: tuple[Any, list[str], list[str]], tmp_path: Path) -> None:
    _, old, _ = history
    out = io.StringIO()
    call_command("prune_logs", "--target", "request_log", "--archive", str(tmp_path), "--pause", "0", stdout=out)
    [archive] = tmp_path.glob("request_log-before-*.jsonl.gz")
    assert f"archived to {archive}" in out.getvalue()
    rows = [orjson.loads(line) for line in gzip.decompress(archive.read_bytes()).splitlines()]
    assert sorted(row["request_id"] for row in rows) == sorted(old)
    assert {row["total_tokens"] for row in rows} == {150}
    assert RequestLog.objects.filter(request_id__in=old).count() == 0


def test_dry_run_and_zero_days_delete_nothing(history: tuple[Any, list[str], list[str]]) -> None:
    out = io.StringIO()
    call_command("prune_logs", "--target", "request_log", "--dry-run", stdout=out)
    assert "would delete 30 rows" in out.getvalue()
    call_command("prune_logs", "--days", "0", stdout=out)
    assert "kept forever" in out.getvalue()
    assert RequestLog.objects.count() == 120


def test_set_aside_rows_share_the_log_retention(transactional_db: Any, settings: Any) -> None:
    settings.GATEWAY_LOG_RETENTION_DAYS = 10
    SetAsideLogRow.objects.create(request_id="old", created_at=timezone.now() - timedelta(days=11), values="{}")
    SetAsideLogRow.objects.create(request_id="new", created_at=timezone.now() - timedelta(days=9), values="{}")
    call_command("prune_logs", stdout=io.StringIO())
    assert list(SetAsideLogRow.objects.values_list("request_id", flat=True)) == ["new"]


def test_stored_responses_go_once_expired(transactional_db: Any, django_user_model: Any) -> None:
    """Stored responses carry their own expiry (GATEWAY_RESPONSES_RETENTION_DAYS when stored)."""
    from completions.models import StoredResponse

    user = django_user_model.objects.create_user("storer")
    now = timezone.now()
    for name, expires in (("gone", now - timedelta(minutes=1)), ("kept", now + timedelta(days=1)), ("forever", None)):
        StoredResponse.objects.create(id=f"resp_{name}", user=user, model="m", response={}, expires_at=expires)
    out = io.StringIO()
    call_command("prune_logs", "--target", "stored_responses", "--pause", "0", stdout=out)
    assert sorted(StoredResponse.objects.values_list("id", flat=True)) == ["resp_forever", "resp_kept"]
    assert "stored_responses: deleted 1 rows expired before" in out.getvalue()


def test_another_module_registers_its_own_rows_with_their_own_retention(
    transactional_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook stored responses use: a target of their own; keys that aren't integers go oldest first."""
    target = retention.Target("stored_things", "completions.SetAsideLogRow", days=lambda: 3, field="created_at")
    monkeypatch.setitem(retention.TARGETS, "stored_things", target)
    monkeypatch.setattr(retention, "_integer_pk", lambda model: False)
    now = datetime.now(UTC)
    for age in (1, 2, 4, 5, 6):
        SetAsideLogRow.objects.create(request_id=f"thing-{age}", created_at=now - timedelta(days=age), values="{}")
    out = io.StringIO()
    call_command("prune_logs", "--target", "stored_things", "--batch-size", "2", "--pause", "0", stdout=out)
    assert sorted(SetAsideLogRow.objects.values_list("request_id", flat=True)) == ["thing-1", "thing-2"]
    assert "stored_things: deleted 3 rows" in out.getvalue()
    with pytest.raises(Exception, match="Unknown target"):
        call_command("prune_logs", "--target", "nope", stdout=io.StringIO())
