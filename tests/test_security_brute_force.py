"""Issue 9, finding 9: the admin login locks out after repeated failures (django-axes), and the
management API is throttled per user and per anonymous address (DRF)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import Client, override_settings
from rest_framework.test import APIClient

from completions.keys import create_management_token
from tests.conftest import ServerThread
from tests.openapi import assert_valid

LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture
def admin_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_superuser("root", "root@example.com", "correct horse battery")


def login(client: Client, password: str, username: str = "root") -> Any:
    return client.post(LOGIN, {"username": username, "password": password})


def signed_in(client: Client) -> bool:
    return client.get("/admin/").status_code == 200


@pytest.mark.django_db
def test_the_right_password_is_refused_after_many_wrong_ones(admin_user: Any) -> None:
    client = Client()
    statuses = [login(client, "wrong").status_code for _ in range(40)]
    # The form again (with its error) until the limit, then the lockout page.
    limit = settings.AXES_FAILURE_LIMIT
    assert statuses == [200] * (limit - 1) + [429] * (40 - limit + 1)
    locked = login(client, "correct horse battery")
    assert locked.status_code == 429
    assert not signed_in(client)


@pytest.mark.django_db
def test_lockout_starts_at_the_configured_failure_limit(admin_user: Any) -> None:
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(client, "wrong").status_code == 200  # the login form, with its error
    assert login(client, "wrong").status_code == 429  # this failure reaches the limit
    assert login(client, "correct horse battery").status_code == 429


@pytest.mark.django_db
def test_below_the_limit_the_right_password_works_and_resets_the_count(admin_user: Any) -> None:
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        login(client, "wrong")
    assert login(client, "correct horse battery").status_code == 302 and signed_in(client)
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(client, "wrong").status_code == 200  # counting starts again from zero


@pytest.mark.django_db
def test_the_lockout_ends_after_the_cool_off(admin_user: Any) -> None:
    # A cool-off long enough that a slow password hash can't outlast it between two attempts.
    with override_settings(AXES_COOLOFF_TIME=timedelta(seconds=4)):
        client = Client()
        for _ in range(settings.AXES_FAILURE_LIMIT):
            login(client, "wrong")
        assert login(client, "correct horse battery").status_code == 429
        time.sleep(4.5)  # the refused attempt above restarted the cool-off
        assert login(client, "correct horse battery").status_code == 302 and signed_in(client)


@pytest.mark.django_db
def test_lockout_is_per_username_and_address_by_default(admin_user: Any, django_user_model: Any) -> None:
    """The default (username+ip_address) keeps an attacker from locking staff out from elsewhere."""
    django_user_model.objects.create_superuser("other", "o@example.com", "other password")
    attacker = Client(REMOTE_ADDR="127.0.0.66")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        login(attacker, "wrong")
    assert login(attacker, "correct horse battery").status_code == 429
    assert login(Client(REMOTE_ADDR="127.0.0.77"), "correct horse battery").status_code == 302
    assert login(attacker, "other password", username="other").status_code == 302


def test_gateway_requests_never_meet_the_admin_lockout(
    raw: httpx.Client, gateway: ServerThread, admin_user: Any
) -> None:
    """The /v1 endpoints don't authenticate through Django, so axes neither costs nor blocks them."""
    with httpx.Client(base_url=gateway.url) as browser:
        for _ in range(settings.AXES_FAILURE_LIMIT + 1):
            browser.get("/admin/login/")
            csrf = browser.cookies["csrftoken"]
            form = {"username": "root", "password": "wrong", "csrfmiddlewaretoken": csrf}
            last = browser.post(LOGIN, data=form, headers={"Referer": gateway.url + LOGIN})
        assert last.status_code == 429
    body = {"model": "mock-gpt-model", "messages": [{"role": "user", "content": "hi"}]}
    assert raw.post("/v1/chat/completions", json=body).status_code == 200
    assert "axes" not in " ".join(settings.GATEWAY_MIDDLEWARE)


# ---- the management API ------------------------------------------------------------------------


@pytest.fixture
def low_rates() -> Iterator[None]:
    rates = {"anon": "3/minute", "user": "5/minute"}
    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}):
        yield


def assert_throttled(response: Any) -> None:
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert_valid(response.json(), "ErrorResponse")
    assert response.json()["error"]["code"] == "throttled"


@pytest.mark.django_db
def test_a_user_is_throttled_at_the_user_rate(low_rates: None, django_user_model: Any) -> None:
    user = django_user_model.objects.create_user("busy")
    cache.delete(f"throttle_user_{user.pk}")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {create_management_token(user)[1]}")
    for path in ("/api/keys/", "/api/usage/", "/api/logs/", "/api/keys/", "/api/"):
        assert client.get(path).status_code == 200, path
    assert_throttled(client.get("/api/keys/"))
    # Another user has a budget of their own.
    other = django_user_model.objects.create_user("calm")
    cache.delete(f"throttle_user_{other.pk}")
    client.credentials(HTTP_AUTHORIZATION=f"Token {create_management_token(other)[1]}")
    assert client.get("/api/keys/").status_code == 200


@pytest.mark.django_db
def test_anonymous_callers_and_wrong_tokens_are_throttled_at_the_anon_rate(low_rates: None) -> None:
    address = "127.0.0.91"
    cache.delete(f"throttle_anon_{address}")
    client = APIClient(REMOTE_ADDR=address)
    assert client.get("/api/keys/").status_code == 401
    assert client.get("/api/usage/", HTTP_AUTHORIZATION="Token wrong-guess-1").status_code == 401
    assert client.get("/api/schema/", HTTP_AUTHORIZATION="Token wrong-guess-2").status_code == 401
    assert_throttled(client.get("/api/keys/", HTTP_AUTHORIZATION="Token wrong-guess-3"))
    assert_throttled(client.get("/api/logs/"))
    # A made-up X-Forwarded-For doesn't buy a fresh bucket.
    assert_throttled(client.get("/api/keys/", HTTP_X_FORWARDED_FOR="127.0.0.92"))
