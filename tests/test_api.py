"""Management API: each user sees and manages only their own keys, usage and log; staff see all."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from rest_framework.test import APIClient

from completions.keys import create_api_key, create_management_token, hash_secret
from completions.models import APIKey, ModelRoute, RequestLog
from completions.recorder import LogWriter, RequestRecord
from completions.usage import rollup
from tests.openapi import assert_valid


@pytest.fixture
def people(django_user_model: Any) -> dict[str, Any]:
    alice = django_user_model.objects.create_user("alice", password="pw")
    bob = django_user_model.objects.create_user("bob", password="pw")
    staff = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    return {"alice": alice, "bob": bob, "staff": staff}


def api(user: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {create_management_token(user)[1]}")
    return client


def write(records: list[RequestRecord]) -> None:
    writer = LogWriter()
    writer.hooks.append(rollup)
    writer.write(records)


@pytest.mark.django_db
def test_keys_are_private_and_the_secret_is_shown_once(people: dict[str, Any]) -> None:
    alice, bob = api(people["alice"]), api(people["bob"])
    created = alice.post("/api/keys/", {"name": "laptop"}, format="json")
    assert created.status_code == 201 and "no-store" in created["Cache-Control"]
    secret = created.json()["secret"]
    key = APIKey.objects.get(key_hash=hash_secret(secret))
    assert key.user == people["alice"] and created.json()["prefix"] == secret[:12]
    listing = alice.get("/api/keys/").json()
    assert [k["id"] for k in listing] == [key.pk] and "secret" not in listing[0]
    assert "secret" not in alice.get(f"/api/keys/{key.pk}/").json()
    # Rename, then revoke.
    assert alice.patch(f"/api/keys/{key.pk}/", {"name": "work laptop"}, format="json").json()["name"] == "work laptop"
    # A user may tighten their key's limits, never loosen them.
    assert alice.patch(f"/api/keys/{key.pk}/", {"rpm_limit": 5}, format="json").status_code == 200
    loosen = alice.patch(f"/api/keys/{key.pk}/", {"rpm_limit": 6}, format="json")
    assert loosen.status_code == 400 and loosen.json()["error"]["param"] == "rpm_limit"
    key.refresh_from_db()
    assert key.rpm_limit == 5
    # Bob cannot see, rename or revoke Alice's key: 404, as if it did not exist.
    assert bob.get(f"/api/keys/{key.pk}/").status_code == 404
    assert bob.patch(f"/api/keys/{key.pk}/", {"name": "mine"}, format="json").status_code == 404
    denied = bob.post(f"/api/keys/{key.pk}/revoke/")
    assert denied.status_code == 404 and denied.json()["error"]["type"] == "invalid_request_error"
    assert bob.get("/api/keys/").json() == []
    revoked = alice.post(f"/api/keys/{key.pk}/revoke/").json()
    assert revoked["status"] == "revoked"


@pytest.mark.django_db
def test_staff_see_everyone_and_set_limits(people: dict[str, Any]) -> None:
    create_api_key(people["alice"], "a")
    create_api_key(people["bob"], "b")
    staff = api(people["staff"])
    assert {k["user"] for k in staff.get("/api/keys/").json()} == {"alice", "bob"}
    assert {k["user"] for k in staff.get(f"/api/keys/?user={people['bob'].pk}").json()} == {"bob"}
    made = staff.post(
        "/api/keys/",
        {"name": "for bob", "user_id": people["bob"].pk, "rpm_limit": 7, "allowed_models": ["mock-gpt-model"]},
        format="json",
    ).json()
    key = APIKey.objects.get(pk=made["id"])
    assert (key.user, key.rpm_limit, key.allowed_models) == (people["bob"], 7, ["mock-gpt-model"])


@pytest.mark.django_db
def test_usage_and_logs_are_scoped_filtered_and_paginated(people: dict[str, Any]) -> None:
    ka, _ = create_api_key(people["alice"], "a")
    kb, _ = create_api_key(people["bob"], "b")
    for name in ("m1", "m2"):  # roll-ups are kept per model only for routed models
        ModelRoute.objects.create(model_name=name, provider="mock")
    day1 = datetime(2026, 11, 1, 10, tzinfo=UTC)
    day2 = datetime(2026, 11, 2, 10, tzinfo=UTC)
    records = []
    for i in range(7):
        records.append(
            RequestRecord(
                request_id=f"a{i}",
                created_at=day1 if i < 4 else day2,
                key_id=ka.pk,
                user_id=people["alice"].pk,
                model="m1" if i % 2 else "m2",
                status_code=200 if i else 500,
                prompt_tokens=10,
                completion_tokens=5,
                input_price=Decimal("1"),
                output_price=Decimal("2"),
                latency_ms=100,
            )
        )
    for i in range(3):
        records.append(
            RequestRecord(
                request_id=f"b{i}",
                created_at=day1,
                key_id=kb.pk,
                user_id=people["bob"].pk,
                model="m1",
                prompt_tokens=1,
                completion_tokens=1,
                latency_ms=10,
            )
        )
    write(records)
    alice = api(people["alice"])
    by_day = alice.get("/api/usage/?start=2026-11-01&end=2026-11-02&group_by=day").json()["data"]
    assert [(d["day"], d["requests"], d["errors"], d["total_tokens"]) for d in by_day] == [
        ("2026-11-01", 4, 1, 60),
        ("2026-11-02", 3, 0, 45),
    ]
    assert Decimal(by_day[0]["cost"]) == Decimal("0.00008")  # 4 x (10 x 1 + 5 x 2) / 1e6
    by_model = alice.get("/api/usage/?start=2026-11-01&end=2026-11-02&group_by=model").json()["data"]
    assert {d["model"]: d["requests"] for d in by_model} == {"m1": 3, "m2": 4}
    total = alice.get("/api/usage/?start=2026-11-01&end=2026-11-02&group_by=total").json()["data"][0]
    assert total["requests"] == 7 == RequestLog.objects.filter(user=people["alice"]).count()
    assert alice.get(f"/api/usage/?key={kb.pk}&start=2026-11-01").status_code == 404  # Bob's key
    bad = alice.get("/api/usage/?start=2026-11-05&end=2026-11-01")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "start"
    staff_total = (
        api(people["staff"]).get("/api/usage/?start=2026-11-01&end=2026-11-02&group_by=total").json()["data"][0]
    )
    assert staff_total["requests"] == 10

    page = alice.get("/api/logs/?page_size=3").json()
    assert [r["request_id"] for r in page["results"]] == ["a6", "a5", "a4"]
    seen = [r["request_id"] for r in page["results"]]
    while page["next"]:
        page = alice.get(page["next"]).json()
        seen += [r["request_id"] for r in page["results"]]
    assert sorted(seen) == sorted(f"a{i}" for i in range(7))
    assert [r["request_id"] for r in alice.get("/api/logs/?status=500").json()["results"]] == ["a0"]
    assert len(alice.get("/api/logs/?model=m1").json()["results"]) == 3
    assert alice.get("/api/logs/?request_id=b0").json()["results"] == []  # Bob's row
    bob_row = RequestLog.objects.get(request_id="b0")
    assert alice.get(f"/api/logs/{bob_row.pk}/").status_code == 404
    assert api(people["bob"]).get(f"/api/logs/{bob_row.pk}/").json()["request_id"] == "b0"


@pytest.mark.django_db
def test_api_requires_login_and_answers_in_the_envelope(people: dict[str, Any]) -> None:
    anonymous = APIClient()
    response = anonymous.get("/api/keys/")
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"
    assert_valid(response.json(), "ErrorResponse")
    assert api(people["alice"]).get("/api/nope/").status_code == 404


@pytest.mark.django_db
def test_openapi_schema_and_offline_docs(people: dict[str, Any]) -> None:
    client = api(people["alice"])
    schema = client.get("/api/schema/?format=json").json()
    assert {"/api/keys/", "/api/keys/{id}/revoke/", "/api/usage/", "/api/logs/"} <= set(schema["paths"])
    client.force_authenticate(people["alice"])
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    # Served locally: no script or stylesheet from another host (the page's random CSP nonce
    # may spell "cdn", so look at the URLs, not for the word).
    assert "swagger-ui" in html and not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html)
