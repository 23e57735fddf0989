"""Two users, two gunicorn worker processes, one Redis: the limits hold across workers, and the
API shows each user their own numbers, which add up to the request log."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.db import connection

from completions.keys import create_api_key
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    not settings.REDIS_URL, reason="limits are shared across processes only through Redis (REDIS_URL)"
)


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return (
        f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    )


@pytest.fixture
def workers(transactional_db: Any) -> Iterator[str]:
    """gunicorn with two uvicorn workers on the test database, as a deployment runs it."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "GATEWAY_DEBUG_HEADERS": "true",
        "CACHE_KEY_PREFIX": settings.CACHES["default"]["KEY_PREFIX"],
        "GATEWAY_REDIS_PREFIX": settings.GATEWAY_REDIS_PREFIX,
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "compat_api.asgi:application",
            "-k",
            "uvicorn_worker.UvicornWorker",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "10",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/v1/models", timeout=1)
            break
        except httpx.HTTPError as exc:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("gunicorn did not start") from exc
            time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def fire(url: str, secret: str, n: int) -> list[httpx.Response]:
    """n requests at once, each on its own connection, so the workers share them."""
    body = {"model": "mock-gpt-model", "messages": [{"role": "user", "content": "hello"}]}

    def one(_: int) -> httpx.Response:
        return httpx.post(
            url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=30
        )

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, range(n)))


def test_limits_hold_across_two_workers_and_usage_adds_up(workers: str, django_user_model: Any) -> None:
    from completions.keys import create_management_token
    from completions.models import RequestLog, UsageDaily

    alice = django_user_model.objects.create_user("alice")
    bob = django_user_model.objects.create_user("bob")
    alice_key, alice_secret = create_api_key(alice, "alice key", rpm_limit=10)
    bob_key, bob_secret = create_api_key(bob, "bob key", rpm_limit=4)

    alice_answers = fire(workers, alice_secret, 30)
    bob_answers = fire(workers, bob_secret, 15)

    assert sum(r.status_code == 200 for r in alice_answers) == 10
    assert sum(r.status_code == 200 for r in bob_answers) == 4
    assert {r.status_code for r in alice_answers + bob_answers} == {200, 429}
    served_by = {r.headers["x-gateway-worker"] for r in alice_answers + bob_answers}
    assert len(served_by) == 2, "both worker processes must have served requests"

    # The workers' log writers catch up; then the log, the roll-ups and the API agree.
    deadline = time.monotonic() + 20
    while RequestLog.objects.count() < 45 and time.monotonic() < deadline:
        time.sleep(0.2)
    for user, key, ok, total in ((alice, alice_key, 10, 30), (bob, bob_key, 4, 15)):
        rows = RequestLog.objects.filter(api_key=key)
        assert rows.count() == total and rows.filter(status_code=200).count() == ok
        assert rows.filter(status_code=429, error_code="rate_limit_exceeded").count() == total - ok
        rollup = UsageDaily.objects.get(key_id=key.pk)
        assert (rollup.requests, rollup.errors) == (total, total - ok)
        assert rollup.total_tokens == sum(r.total_tokens for r in rows)
        _, token = create_management_token(user)
        api = httpx.Client(base_url=workers, headers={"Authorization": f"Token {token}"})
        usage = api.get("/api/usage/", params={"group_by": "key"}).json()["data"]
        assert [(u["key_id"], u["requests"], u["errors"], u["total_tokens"]) for u in usage] == [
            (key.pk, total, total - ok, rollup.total_tokens)
        ]
        logs = api.get("/api/logs/", params={"page_size": 100}).json()["results"]
        assert len(logs) == total and {entry["api_key"] for entry in logs} == {key.pk}
