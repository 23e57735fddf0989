"""Issue 9, findings 3 and 4: a user's own keys never get more than staff gave the user.

A non-staff user's new key starts from the tightest of the user's limits and every limit staff
set on any of the user's keys; the owner may only tighten limits and expiry; an expired or
revoked key stays dead; GATEWAY_USERS_CREATE_KEYS decides whether users create keys at all."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client, override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from completions.app import current
from completions.keys import create_api_key, create_management_token
from completions.models import APIKey, ModelRoute, UserLimits
from tests.conftest import ServerThread
from tests.openapi import assert_valid

HI = [{"role": "user", "content": "hi"}]


def api_as(user: Any, base_url: str | None = None) -> Any:
    """The management API as `user`, by token: on the real server if `base_url`, else Django's test client."""
    header = f"Token {create_management_token(user)[1]}"
    if base_url:
        return httpx.Client(base_url=base_url, headers={"Authorization": header}, timeout=30)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    return client


def chat(gateway: ServerThread, secret: str, model: str = "mock-gpt-model") -> int:
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": model, "messages": HI},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    )
    return response.status_code


def refused(response: Any, param: str) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert_valid(body, "ErrorResponse")
    assert body["error"]["param"] == param


@pytest.fixture
def people(django_user_model: Any) -> dict[str, Any]:
    return {
        "alice": django_user_model.objects.create_user("alice"),
        "staff": django_user_model.objects.create_user("staff", is_staff=True),
    }


# ---- finding 3: a new key can't escape what staff set ----------------------------------------


def test_staff_restrictions_on_a_key_bind_the_users_new_keys(gateway: ServerThread, people: dict[str, Any]) -> None:
    ModelRoute.objects.create(model_name="pricey-model", provider="mock")
    alice, staff = api_as(people["alice"], gateway.url), api_as(people["staff"], gateway.url)
    first = alice.post("/api/keys/", json={"name": "first"}).json()
    restricted = staff.patch(
        f"/api/keys/{first['id']}/", json={"allowed_models": ["mock-gpt-model"], "rpm_limit": 2}
    ).json()
    assert (restricted["allowed_models"], restricted["rpm_limit"]) == (["mock-gpt-model"], 2)
    # Revoking the restricted key doesn't lift the restriction either.
    assert alice.post(f"/api/keys/{first['id']}/revoke/").status_code == 200

    made = alice.post("/api/keys/", json={"name": "fresh start"})
    assert made.status_code == 201
    new = made.json()
    assert (new["allowed_models"], new["rpm_limit"]) == (["mock-gpt-model"], 2)
    # And the gateway holds the new key to them.
    assert chat(gateway, new["secret"], "pricey-model") == 404
    assert [chat(gateway, new["secret"]) for _ in range(3)] == [200, 200, 429]


@pytest.mark.django_db
def test_restrictions_set_in_the_admin_bind_new_keys_too(people: dict[str, Any], django_user_model: Any) -> None:
    key, _ = create_api_key(people["alice"], "k", by_staff=False)
    admin = Client()
    admin.force_login(django_user_model.objects.create_superuser("root", "r@example.com", "pw"))
    form = {
        "user": people["alice"].pk,
        "name": "k",
        "expires_at_0": "",
        "expires_at_1": "",
        "allowed_models": "",
        "rpm_limit": "",
        "tpm_limit": "700",
        "token_budget": "",
        "spend_budget": "2.5",
        "budget_period": "total",
    }
    assert admin.post(f"/admin/completions/apikey/{key.pk}/change/", form).status_code == 302
    new = api_as(people["alice"]).post("/api/keys/", {"name": "n"}, format="json").json()
    assert (new["tpm_limit"], Decimal(new["spend_budget"]), new["budget_period"]) == (700, Decimal("2.5"), "total")


def test_a_new_key_inherits_the_users_limits_and_cannot_exceed_them(
    gateway: ServerThread, people: dict[str, Any]
) -> None:
    ModelRoute.objects.create(model_name="pricey-model", provider="mock")
    UserLimits.objects.create(
        user=people["alice"], rpm_limit=3, spend_budget=Decimal("1"), allowed_models=["mock-gpt-model"]
    )
    alice = api_as(people["alice"], gateway.url)
    for field, value in (
        ("rpm_limit", 10),
        ("spend_budget", "5"),
        ("allowed_models", ["mock-gpt-model", "pricey-model"]),
    ):
        refused(alice.post("/api/keys/", json={"name": "greedy", field: value}), field)
    assert not APIKey.objects.exists()

    inherited = alice.post("/api/keys/", json={"name": "plain"}).json()
    assert inherited["rpm_limit"] is None  # blank: inherits the user's 3
    assert chat(gateway, inherited["secret"], "pricey-model") == 404
    assert [chat(gateway, inherited["secret"]) for _ in range(4)] == [200, 200, 200, 429]

    tighter = alice.post("/api/keys/", json={"name": "tight", "rpm_limit": 1, "spend_budget": "0.5"})
    assert tighter.status_code == 201
    assert (tighter.json()["rpm_limit"], Decimal(tighter.json()["spend_budget"])) == (1, Decimal("0.5"))


@pytest.mark.django_db
def test_an_owner_may_only_tighten_limits(people: dict[str, Any]) -> None:
    key, _ = create_api_key(people["alice"], "k", rpm_limit=5, allowed_models=["a", "b"], budget_period="total")
    alice = api_as(people["alice"])
    url = f"/api/keys/{key.pk}/"
    for change, param in (
        ({"rpm_limit": 6}, "rpm_limit"),
        ({"rpm_limit": None}, "rpm_limit"),  # blank would inherit "unlimited"
        ({"allowed_models": ["a", "c"]}, "allowed_models"),
        ({"allowed_models": None}, "allowed_models"),  # every model
        ({"allowed_models": []}, "allowed_models"),
        ({"budget_period": "month"}, "budget_period"),
        ({"name": "renamed", "tpm_limit": 10, "rpm_limit": 50}, "rpm_limit"),
    ):
        refused(alice.patch(url, change, format="json"), param)
    key.refresh_from_db()
    assert (key.name, key.rpm_limit, key.tpm_limit, key.allowed_models) == ("k", 5, None, ["a", "b"])

    ok = alice.patch(
        url, {"rpm_limit": 4, "tpm_limit": 1000, "allowed_models": ["b"], "token_budget": 9}, format="json"
    )
    assert ok.status_code == 200, ok.content
    assert alice.patch(url, {"rpm_limit": 4, "budget_period": "total"}, format="json").status_code == 200  # unchanged
    key.refresh_from_db()
    assert (key.rpm_limit, key.tpm_limit, key.allowed_models, key.token_budget) == (4, 1000, ["b"], 9)


@pytest.mark.django_db
def test_a_blank_limit_is_allowed_when_the_users_own_limit_is_tighter(people: dict[str, Any]) -> None:
    UserLimits.objects.create(user=people["alice"], rpm_limit=2)
    key, _ = create_api_key(people["alice"], "k", rpm_limit=5)  # staff loosened this one key
    response = api_as(people["alice"]).patch(f"/api/keys/{key.pk}/", {"rpm_limit": None}, format="json")
    assert response.status_code == 200 and response.json()["rpm_limit"] is None


@pytest.mark.django_db
def test_staff_may_set_any_limit(people: dict[str, Any]) -> None:
    UserLimits.objects.create(user=people["alice"], rpm_limit=2)
    staff = api_as(people["staff"])
    made = staff.post(
        "/api/keys/", {"name": "vip", "user_id": people["alice"].pk, "rpm_limit": 100}, format="json"
    ).json()
    assert made["rpm_limit"] == 100
    assert staff.patch(f"/api/keys/{made['id']}/", {"rpm_limit": 200}, format="json").json()["rpm_limit"] == 200


@pytest.mark.django_db
def test_disjoint_model_restrictions_leave_no_key_to_make(people: dict[str, Any]) -> None:
    create_api_key(people["alice"], "a", allowed_models=["m1"])
    create_api_key(people["alice"], "b", allowed_models=["m2"])
    refused(api_as(people["alice"]).post("/api/keys/", {"name": "c"}, format="json"), "allowed_models")


@pytest.mark.django_db
def test_who_creates_keys_is_a_setting(people: dict[str, Any]) -> None:
    alice, staff = api_as(people["alice"]), api_as(people["staff"])
    assert alice.post("/api/keys/", {"name": "mine"}, format="json").status_code == 201
    with override_settings(GATEWAY_USERS_CREATE_KEYS=False):
        denied = alice.post("/api/keys/", {"name": "another"}, format="json")
        assert denied.status_code == 403
        assert_valid(denied.json(), "ErrorResponse")
        assert "only staff" in denied.json()["error"]["message"]
        made = staff.post("/api/keys/", {"name": "for alice", "user_id": people["alice"].pk}, format="json")
        assert made.status_code == 201
        # Users still see, rename and revoke what they have.
        key_id = made.json()["id"]
        assert alice.patch(f"/api/keys/{key_id}/", {"name": "renamed"}, format="json").status_code == 200
        assert alice.post(f"/api/keys/{key_id}/revoke/").status_code == 200
    assert APIKey.objects.filter(user=people["alice"]).count() == 2


def test_limits_staff_set_before_this_release_bind_new_keys(transactional_db: Any, django_user_model: Any) -> None:
    """The migration records every limit already on a key as staff's (users could not set any)."""
    alice = django_user_model.objects.create_user("alice")
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes("completions")
    before = ("completions", "0003_management_tokens")
    executor.migrate([before])
    OldKey = executor.loader.project_state([before]).apps.get_model("completions", "APIKey")
    OldKey.objects.create(user_id=alice.pk, name="old", prefix="sk-gw-old", key_hash="0" * 64, rpm_limit=7)
    OldKey.objects.create(user_id=alice.pk, name="plain", prefix="sk-gw-pln", key_hash="1" * 64)
    MigrationExecutor(connection).migrate(latest)

    assert APIKey.objects.get(name="old").staff_limits["rpm_limit"] == 7
    assert APIKey.objects.get(name="plain").staff_limits is None
    new = api_as(alice).post("/api/keys/", {"name": "new"}, format="json").json()
    assert new["rpm_limit"] == 7


# ---- finding 4: expired and revoked keys stay dead for their owner ----------------------------


def test_an_owner_cannot_revive_an_expired_key(gateway: ServerThread, people: dict[str, Any]) -> None:
    key, secret = create_api_key(people["alice"], "k", expires_at=timezone.now() + timedelta(seconds=1))
    key.expires_at = timezone.now() - timedelta(minutes=1)
    key.save()
    assert chat(gateway, secret) == 401
    alice = api_as(people["alice"], gateway.url)
    for expires in (None, (timezone.now() + timedelta(days=30)).isoformat()):
        refused(alice.patch(f"/api/keys/{key.pk}/", json={"expires_at": expires}), "expires_at")
    key.refresh_from_db()
    assert key.status == "expired"
    assert chat(gateway, secret) == 401
    # Staff can (and the gateway sees it once this worker's few seconds of key cache are over).
    assert (
        api_as(people["staff"], gateway.url).patch(f"/api/keys/{key.pk}/", json={"expires_at": None}).status_code == 200
    )
    current().keys.clear()
    assert chat(gateway, secret) == 200


@pytest.mark.django_db
def test_an_owner_may_only_bring_expiry_forward(people: dict[str, Any]) -> None:
    soon = timezone.now() + timedelta(days=10)
    key, _ = create_api_key(people["alice"], "k", expires_at=soon)
    never, _ = create_api_key(people["alice"], "never")
    alice = api_as(people["alice"])
    refused(alice.patch(f"/api/keys/{key.pk}/", {"expires_at": None}, format="json"), "expires_at")
    later = (soon + timedelta(days=1)).isoformat()
    refused(alice.patch(f"/api/keys/{key.pk}/", {"expires_at": later}, format="json"), "expires_at")
    earlier = soon - timedelta(days=5)
    assert alice.patch(f"/api/keys/{key.pk}/", {"expires_at": earlier.isoformat()}, format="json").status_code == 200
    assert alice.patch(f"/api/keys/{never.pk}/", {"expires_at": later}, format="json").status_code == 200
    key.refresh_from_db()
    never.refresh_from_db()
    assert key.expires_at == earlier and never.expires_at is not None


@pytest.mark.django_db
def test_a_revoked_keys_expiry_is_final_for_its_owner(people: dict[str, Any]) -> None:
    key, _ = create_api_key(people["alice"], "k")
    alice = api_as(people["alice"])
    alice.post(f"/api/keys/{key.pk}/revoke/")
    future = (timezone.now() + timedelta(days=1)).isoformat()
    refused(alice.patch(f"/api/keys/{key.pk}/", {"expires_at": future}, format="json"), "expires_at")
    assert alice.patch(f"/api/keys/{key.pk}/", {"revoked_at": None}, format="json").json()["status"] == "revoked"


@pytest.mark.django_db
def test_a_new_key_cannot_be_born_expired(people: dict[str, Any]) -> None:
    past = (timezone.now() - timedelta(days=1)).isoformat()
    refused(api_as(people["alice"]).post("/api/keys/", {"name": "k", "expires_at": past}, format="json"), "expires_at")
