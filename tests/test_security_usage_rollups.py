"""Issue 9, finding 12: made-up model names are logged as sent but share one roll-up bucket, so a
tenant can't grow the usage tables or fill the dashboard's top models."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from django.utils import timezone

from completions.dashboard import dashboard_data
from completions.models import LatencyDaily, ModelRoute, RequestLog, UsageDaily
from completions.usage import UNKNOWN_MODEL
from tests.conftest import log_rows

HI = [{"role": "user", "content": "hi"}]


def test_unknown_models_roll_up_under_one_bucket(raw: httpx.Client) -> None:
    made_up = [f"made-up-model-{i}" for i in range(50)]
    for name in made_up:
        assert raw.post("/v1/chat/completions", json={"model": name, "messages": HI}).status_code == 404
    for _ in range(3):
        assert raw.post("/v1/chat/completions", json={"model": "mock-gpt-model", "messages": HI}).status_code == 200
    rows = log_rows()

    # The log keeps every name as the client sent it...
    assert sorted({r.model for r in rows}) == sorted([*made_up, "mock-gpt-model"])
    # ...the roll-ups have one row per real model, and one for all the rest.
    usage = {u.model: (u.requests, u.errors) for u in UsageDaily.objects.all()}
    assert usage == {"mock-gpt-model": (3, 0), UNKNOWN_MODEL: (50, 50)}
    assert set(LatencyDaily.objects.values_list("model", flat=True)) == {"mock-gpt-model", UNKNOWN_MODEL}
    assert sum(LatencyDaily.objects.filter(model=UNKNOWN_MODEL).values_list("count", flat=True)) == 50
    today = timezone.now().date()
    top = [row["label"] for row in dashboard_data(today - timedelta(days=1), today)["top_models"]]
    assert top == [UNKNOWN_MODEL, "mock-gpt-model"]


def test_a_route_added_at_run_time_rolls_up_under_its_own_name(raw: httpx.Client) -> None:
    body: dict[str, Any] = {"model": "fresh-model", "messages": HI}
    assert raw.post("/v1/chat/completions", json=body).status_code == 404
    log_rows()
    ModelRoute.objects.create(model_name="fresh-model", provider="mock", aliases=["fresh-alias"])
    assert raw.post("/v1/chat/completions", json=body).status_code == 200
    assert raw.post("/v1/chat/completions", json={**body, "model": "fresh-alias"}).status_code == 200
    log_rows()
    usage = {u.model: u.requests for u in UsageDaily.objects.all()}
    assert usage == {UNKNOWN_MODEL: 1, "fresh-model": 1, "fresh-alias": 1}
    assert RequestLog.objects.filter(model="fresh-model").count() == 2


def test_staff_usage_by_model_shows_the_bucket(django_user_model: Any, raw: httpx.Client) -> None:
    from rest_framework.test import APIClient

    assert raw.post("/v1/chat/completions", json={"model": "nope", "messages": HI}).status_code == 404
    log_rows()
    staff = APIClient()
    staff.force_login(django_user_model.objects.create_user("staff", is_staff=True))
    data = staff.get("/api/usage/?group_by=model").json()["data"]
    assert [(row["model"], row["requests"]) for row in data] == [(UNKNOWN_MODEL, 1)]
