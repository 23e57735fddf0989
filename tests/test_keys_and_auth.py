"""API keys: stored as hashes, shown once, cached without a query per request, revocable within seconds."""

from __future__ import annotations

import hashlib
import io
import time
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from django.utils import timezone

from completions.keys import KEY_PREFIX, create_api_key, hash_secret, revoke_api_key
from completions.models import APIKey

BODY = {"model": "mock-gpt-model", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.django_db
def test_keys_are_random_prefixed_and_stored_only_as_hash(django_user_model: Any) -> None:
    user = django_user_model.objects.create_user("alice")
    key, secret = create_api_key(user, "laptop")
    _other_key, other = create_api_key(user, "ci")
    assert secret.startswith(KEY_PREFIX) and secret != other
    assert len(secret) - len(KEY_PREFIX) >= 43  # 32 random bytes, base64
    assert key.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert key.prefix == secret[:12] and len(key.prefix) < len(secret) // 3
    stored = APIKey.objects.filter(pk=key.pk).values().get()
    assert all(secret not in str(value) for value in stored.values())


@pytest.mark.django_db
def test_create_api_key_command_prints_the_secret_once(django_user_model: Any) -> None:
    django_user_model.objects.create_user("bob")
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", user="bob", name="server", stdout=out, stderr=err)
    secret = out.getvalue().strip()
    assert APIKey.objects.get(key_hash=hash_secret(secret)).name == "server"
    assert secret not in err.getvalue()
    with pytest.raises(Exception, match="No user named"):
        call_command("create_api_key", user="nobody", name="x", stdout=io.StringIO(), stderr=io.StringIO())


@pytest.mark.django_db
def test_demo_setup_reuses_its_key(tmp_path: Any) -> None:
    key_file = tmp_path / "demo-key"
    first, second = io.StringIO(), io.StringIO()
    call_command("demo_setup", key_file=str(key_file), stdout=first)
    call_command("demo_setup", key_file=str(key_file), stdout=second)
    assert first.getvalue() == second.getvalue()
    assert APIKey.objects.filter(key_hash=hash_secret(first.getvalue().strip())).count() == 1


def test_key_lookup_is_cached_and_revocation_reaches_workers(gateway: Any, user: Any, settings: Any) -> None:
    settings.GATEWAY_KEY_CACHE_SECONDS = 0.5
    key, secret = create_api_key(user, "cached")
    headers = {"Authorization": f"Bearer {secret}"}
    post = lambda: httpx.post(gateway.url + "/v1/chat/completions", json=BODY, headers=headers)  # noqa: E731
    assert post().status_code == 200
    # Change the row behind the caches' back (no signal): requests keep being served from
    # the in-process cache, then from the shared cache, so they did not query the database.
    APIKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    assert post().status_code == 200
    time.sleep(0.6)
    assert post().status_code == 200
    # Revoking through the service clears the shared entry: every worker refuses the key
    # once its in-process entry expires (the first request after that may still be answered
    # from the old entry while it is re-read in the background).
    APIKey.objects.filter(pk=key.pk).update(revoked_at=None)
    revoke_api_key(APIKey.objects.get(pk=key.pk))
    time.sleep(0.6)
    post()
    time.sleep(0.1)
    response = post()
    assert response.status_code == 401 and "revoked" in response.json()["error"]["message"]
    time.sleep(1.2)  # long past the grace period: the lookup is synchronous again
    assert post().status_code == 401


def test_deactivated_user_loses_access(gateway: Any, user: Any, settings: Any) -> None:
    settings.GATEWAY_KEY_CACHE_SECONDS = 0.2
    _, secret = create_api_key(user, "k")
    headers = {"Authorization": f"Bearer {secret}"}
    assert httpx.post(gateway.url + "/v1/chat/completions", json=BODY, headers=headers).status_code == 200
    user.is_active = False
    user.save()
    time.sleep(0.3)
    httpx.post(gateway.url + "/v1/chat/completions", json=BODY, headers=headers)  # may be the stale entry's last answer
    time.sleep(0.1)
    assert httpx.post(gateway.url + "/v1/chat/completions", json=BODY, headers=headers).status_code == 401


def test_sane_request_ids_are_echoed_others_replaced(raw: httpx.Client) -> None:
    ok = raw.post("/v1/chat/completions", json=BODY, headers={"x-request-id": "trace-123:abc"})
    assert ok.headers["x-request-id"] == "trace-123:abc"
    weird = raw.post("/v1/chat/completions", json=BODY, headers={"x-request-id": "a b <script>"})
    assert weird.headers["x-request-id"].startswith("req_")
    assert raw.get("/nowhere").headers["x-request-id"].startswith("req_")
