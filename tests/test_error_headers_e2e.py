"""Errors say which provider was tried and after how many attempts, as answers do
(`x-gateway-provider`, `x-gateway-attempts`); errors raised before any route was tried carry neither."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from completions.providers import register
from tests.fakes.counting import CountingProvider

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def routes(gateway: Any, settings: Any) -> Iterator[None]:
    from completions.models import ModelRoute

    register("counting", "tests.fakes.counting.CountingProvider")
    settings.GATEWAY_RETRY_BASE_SECONDS = 0.01
    CountingProvider.log.clear()
    options = {"fail": 100, "breaker_failures": 100}
    ModelRoute.objects.create(
        model_name="down", provider="counting", upstream_model="d", max_retries=1, options=options
    )
    ModelRoute.objects.create(
        model_name="down-then-mock",
        provider="counting",
        upstream_model="d2",
        max_retries=0,
        fallbacks=["mock-gpt-model"],
        options=options,
    )
    yield


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_an_upstream_error_names_the_provider_and_the_attempts(raw: httpx.Client, routes: None, stream: bool) -> None:
    r = raw.post("/v1/chat/completions", json={"model": "down", "messages": HI, "stream": stream})
    assert r.status_code == 503 and r.json()["error"]["code"] == "upstream_overloaded"
    assert r.headers["x-gateway-provider"] == "counting"
    assert r.headers["x-gateway-attempts"] == "2"  # the first attempt and its retry


def test_a_fallback_that_answers_names_its_own_provider(raw: httpx.Client, routes: None) -> None:
    r = raw.post("/v1/chat/completions", json={"model": "down-then-mock", "messages": HI})
    assert r.status_code == 200
    assert (r.headers["x-gateway-provider"], r.headers["x-gateway-attempts"]) == ("mock", "2")


@pytest.mark.parametrize(
    "body",
    [
        {"model": "no-such-model", "messages": HI},  # 404 before routing
        {"model": "mock-gpt-model", "messages": HI, "temperature": 9},  # 400 before routing
        {"model": "mock-gpt-model", "messages": HI, "web_search_options": {}},  # refused while preparing
    ],
    ids=["unknown-model", "invalid", "unsupported"],
)
def test_errors_before_any_attempt_carry_no_route_headers(raw: httpx.Client, routes: None, body: Any) -> None:
    r = raw.post("/v1/chat/completions", json=body)
    assert r.status_code in (400, 404)
    assert "x-gateway-provider" not in r.headers and "x-gateway-attempts" not in r.headers
