"""One tenant's failing requests don't take a model down for the others.

Through the production command (gunicorn with gunicorn.conf.py, two workers) and an
OpenAI-compatible fake upstream: tenant A's requests fail upstream (500s, then 429s with
retry-after), and tenant B, asking right after for the same single-route model, is served.
Before, A's five failed requests opened each worker's breaker and B got 503 `circuit_open`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from completions.keys import create_api_key
from completions.models import ModelRoute
from tests.fakes.base import Reply
from tests.fakes.openai_server import FakeOpenAI, error
from tests.processes import GatewayProcess


@pytest.fixture
def setup(transactional_db: Any, django_user_model: Any) -> Iterator[tuple[str, FakeOpenAI, str, str]]:
    fake = FakeOpenAI().start()
    ModelRoute.objects.create(
        model_name="shared-model",
        provider="openai",
        upstream_model="up",
        base_url=fake.url + "/v1",
        api_key_env="SHARED_UPSTREAM_KEY",
        max_retries=1,
    )
    _, tenant_a = create_api_key(django_user_model.objects.create_user("tenant-a"), "a")
    _, tenant_b = create_api_key(django_user_model.objects.create_user("tenant-b"), "b")
    env = {"SHARED_UPSTREAM_KEY": "sk-upstream", "GATEWAY_RETRY_BASE_SECONDS": "0.01"}
    with GatewayProcess("gunicorn", workers=2, env=env) as gateway:
        yield gateway.url, fake, tenant_a, tenant_b
    fake.stop()


def ask(url: str, key: str, text: str = "hi") -> httpx.Response:
    body = {"model": "shared-model", "messages": [{"role": "user", "content": text}]}
    return httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_tenant_b_is_served_after_tenant_a_failed_requests(setup: tuple[str, FakeOpenAI, str, str]) -> None:
    url, fake, tenant_a, tenant_b = setup
    fake.script(*[Reply(status=500, json=error("the model crashed on this input", "server_error"))] * 24)
    a_statuses = [ask(url, tenant_a, "poison").status_code for _ in range(12)]
    assert a_statuses == [500] * 12  # each retried once, then the upstream's own error
    assert 12 <= len(fake.chat_requests()) <= 24  # an open breaker still lets each request try once (panic)
    fake.reset()  # the upstream is healthy for other inputs

    b_answers = [ask(url, tenant_b) for _ in range(6)]
    assert [r.status_code for r in b_answers] == [200] * 6, [r.text for r in b_answers if r.status_code != 200]


def test_an_upstream_429_does_not_open_the_breaker_for_others(setup: tuple[str, FakeOpenAI, str, str]) -> None:
    url, fake, tenant_a, tenant_b = setup
    busy = Reply(status=429, json=error("slow down", "rate_limit_error"), headers={"retry-after": "1"})
    fake.script(*[busy] * 12)
    assert [ask(url, tenant_a).status_code for _ in range(6)] == [429] * 6
    fake.reset()  # the upstream has room again
    b_answers = [ask(url, tenant_b) for _ in range(6)]
    assert [r.status_code for r in b_answers] == [200] * 6, [r.text for r in b_answers if r.status_code != 200]


def test_retries_wait_the_documented_backoff_not_a_hint_the_gateway_made(
    transactional_db: Any, django_user_model: Any
) -> None:
    """An upstream 500 with no retry-after is retried after the jittered 0.25 s base, not 1 s (the
    gateway used to put its own `retry-after: 1` on the error and then honour it); an upstream's
    own retry-after is still honoured."""

    fake = FakeOpenAI().start()
    ModelRoute.objects.create(
        model_name="retried",
        provider="openai",
        upstream_model="up",
        base_url=fake.url + "/v1",
        api_key_env="RETRY_UPSTREAM_KEY",
        max_retries=1,
    )
    _, key = create_api_key(django_user_model.objects.create_user("retrier"), "k")
    body = {"model": "retried", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {key}"}
    env = {"RETRY_UPSTREAM_KEY": "sk-upstream", "GATEWAY_RETRY_BASE_SECONDS": "0.25"}
    try:
        with GatewayProcess("gunicorn", workers=2, env=env) as gateway:
            waits = []  # between an attempt's arrival at the upstream and its retry's
            for _ in range(4):
                fake.reset()
                fake.script(Reply(status=500, json=error("boom", "server_error")))
                r = httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
                assert r.status_code == 200 and r.headers["x-gateway-attempts"] == "2"
                first, retry = fake.chat_requests()
                waits.append(retry.at - first.at)
            assert max(waits) < 0.5, waits  # the jittered 0.25 s base, not the 1 s it was
            fake.reset()
            busy = error("slow down", "rate_limit_error")
            fake.script(Reply(status=429, json=busy, headers={"retry-after": "1"}))
            r = httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
            first, retry = fake.chat_requests()
            assert r.status_code == 200 and retry.at - first.at >= 1.0  # the upstream's own hint
    finally:
        fake.stop()
