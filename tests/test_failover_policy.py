"""The failover policy on its own, without a network: which route, how many attempts, what is raised."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from completions.errors import (
    GatewayError,
    InvalidRequest,
    ServiceUnavailable,
    UpstreamAuthFailed,
    UpstreamError,
    from_upstream_status,
)
from completions.failover import CircuitBreakers, Failover
from completions.protocol import ChatCompletionRequest
from completions.providers import Prepared, Provider, Route

REQUEST = ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


class Scripted(Provider):
    """A provider whose calls answer from a script: an exception to raise or a value to return."""

    name = "scripted"

    def __init__(self, route: Route, script: list[Any], refuses: bool = False) -> None:
        super().__init__(route)
        self.script = script
        self.refuses = refuses
        self.prepared = 0
        self.calls = 0

    def prepare(self, request: ChatCompletionRequest) -> Prepared:
        self.prepared += 1
        if self.refuses:
            raise InvalidRequest("no `seed` here", param="seed", code="unsupported_parameter")
        return Prepared(request, None)

    async def call(self) -> str:
        self.calls += 1
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return str(step)


def route(name: str, retries: int = 1, **options: Any) -> Route:
    return Route(model_name="m", provider="mock", upstream_model=name, max_retries=retries, options=options)


@pytest.fixture(autouse=True)
def quick_retries(settings: Any) -> Iterator[None]:
    settings.GATEWAY_RETRY_BASE_SECONDS = 0.001
    settings.GATEWAY_MAX_RETRY_AFTER = 5.0
    settings.GATEWAY_BREAKER_FAILURES = 5
    yield


class Run:
    """One request's failover over `providers`, driven as chat.py drives it."""

    def __init__(self, *providers: Scripted, breakers: CircuitBreakers | None = None) -> None:
        self.providers = {p.route: p for p in providers}
        self.breakers = breakers or CircuitBreakers()
        self.attempts: list[dict[str, Any]] = []

    async def go(self) -> tuple[str, Route]:
        plan = Failover(list(self.providers), self.breakers, self.providers.__getitem__, self.attempts, "m", REQUEST)
        async for attempt in plan:
            async with attempt:
                answer = await attempt.provider.call()  # type: ignore[attr-defined]
        return answer, attempt.route

    def run(self) -> tuple[str, Route]:
        return asyncio.run(self.go())

    def outcomes(self) -> list[tuple[str, Any]]:
        return [(a["route"], a.get("skipped") or a.get("status") or "ok") for a in self.attempts]


def test_the_first_success_ends_the_plan() -> None:
    a, b = Scripted(route("a"), ["from a"]), Scripted(route("b"), ["from b"])
    run = Run(a, b)
    assert run.run() == ("from a", a.route)
    assert run.outcomes() == [("mock:a", "ok")] and b.calls == 0 and b.prepared == 0


def test_a_retryable_failure_is_retried_on_the_same_route() -> None:
    a = Scripted(route("a", retries=1), [UpstreamError("boom", status=500), "second try"])
    run = Run(a)
    assert run.run() == ("second try", a.route)
    assert run.outcomes() == [("mock:a", 500), ("mock:a", "ok")]
    assert a.prepared == 1  # translated once for both attempts


def test_retries_exhausted_move_on_to_the_next_route() -> None:
    a = Scripted(route("a", retries=1), [UpstreamError("x", status=502), UpstreamError("y", status=503)])
    b = Scripted(route("b"), ["from b"])
    run = Run(a, b)
    assert run.run() == ("from b", b.route)
    assert run.outcomes() == [("mock:a", 502), ("mock:a", 503), ("mock:b", "ok")]


def test_a_broken_route_is_left_at_once_without_retrying() -> None:
    a = Scripted(route("a", retries=3), [UpstreamAuthFailed("bad credential")])
    b = Scripted(route("b"), ["from b"])
    run = Run(a, b)
    assert run.run() == ("from b", b.route)
    assert run.outcomes() == [("mock:a", 401), ("mock:b", "ok")]


def test_an_error_in_the_request_is_the_clients_at_once() -> None:
    a = Scripted(route("a", retries=3), [InvalidRequest("bad messages")])
    b = Scripted(route("b"), ["from b"])
    breakers = CircuitBreakers()
    run = Run(a, b, breakers=breakers)
    with pytest.raises(InvalidRequest, match="bad messages"):
        run.run()
    assert run.outcomes() == [("mock:a", 400)] and b.calls == 0
    assert breakers.state(a.route) == "closed"


def test_when_every_route_fails_the_last_error_is_raised() -> None:
    a = Scripted(route("a", retries=0), [UpstreamError("first", status=500)])
    b = Scripted(route("b", retries=0), [UpstreamError("last", status=502)])
    with pytest.raises(GatewayError, match="last"):
        Run(a, b).run()


def test_an_unsupported_parameter_is_a_400_on_the_first_route_and_skips_a_fallback() -> None:
    with pytest.raises(InvalidRequest) as caught:
        Run(Scripted(route("a"), ["x"], refuses=True), Scripted(route("b"), ["y"])).run()
    assert caught.value.param == "seed"

    a, b = Scripted(route("a", retries=0), [UpstreamError("down", status=500)]), Scripted(route("b"), [], refuses=True)
    run = Run(a, b)
    with pytest.raises(UpstreamError, match="down"):
        run.run()
    assert run.outcomes() == [("mock:a", 500), ("mock:b", "unsupported parameters")]


def test_a_long_retry_after_moves_on_instead_of_waiting() -> None:
    slow = from_upstream_status(429, "slow down", provider="mock", retry_after="60")
    a = Scripted(route("a", retries=3), [slow])
    b = Scripted(route("b"), ["from b"])
    run = Run(a, b)
    assert run.run() == ("from b", b.route)
    assert run.outcomes() == [("mock:a", 429), ("mock:b", "ok")]


def test_an_open_breaker_skips_its_route_for_a_healthy_one() -> None:
    breakers = CircuitBreakers()
    a, b = Scripted(route("a", breaker_failures=1), []), Scripted(route("b"), ["from b"])
    breakers.failure(a.route)
    assert breakers.state(a.route) == "open"
    run = Run(a, b, breakers=breakers)
    assert run.run() == ("from b", b.route)
    assert run.outcomes() == [("mock:a", "circuit open"), ("mock:b", "ok")] and a.calls == 0


def test_when_every_route_is_open_the_least_recently_failed_one_is_tried_once() -> None:
    breakers = CircuitBreakers()
    a = Scripted(route("a", retries=3, breaker_failures=1), ["a recovered"])
    b = Scripted(route("b", retries=3, breaker_failures=1), [])
    breakers.failure(a.route)
    breakers.failure(b.route)  # b failed after a: a is the least recently failed
    run = Run(b, a, breakers=breakers)
    assert run.run() == ("a recovered", a.route)
    assert run.outcomes() == [("mock:b", "circuit open"), ("mock:a", "circuit open"), ("mock:a", "ok")]
    assert breakers.state(a.route) == "closed" and breakers.state(b.route) == "open"


def test_without_panic_mode_circuit_open_says_how_long_is_left(settings: Any) -> None:
    settings.GATEWAY_BREAKER_PANIC = False
    breakers = CircuitBreakers()
    a = Scripted(route("a", breaker_failures=1, breaker_cooldown=12), [])
    breakers.failure(a.route)
    with pytest.raises(ServiceUnavailable) as caught:
        Run(a, breakers=breakers).run()
    assert caught.value.code == "circuit_open" and a.calls == 0
    assert 11 <= int(caught.value.headers["retry-after"]) <= 12


def test_a_breaker_counts_failed_requests_not_attempts() -> None:
    breakers = CircuitBreakers()
    for _ in range(2):  # two requests, two failed attempts each, on a route that opens after 3
        a = Scripted(route("a", retries=1, breaker_failures=3), [UpstreamError("x", status=500)] * 2)
        with pytest.raises(UpstreamError):
            Run(a, breakers=breakers).run()
    assert breakers.state(a.route) == "closed"
    a.script = [UpstreamError("x", status=500)] * 2
    with pytest.raises(UpstreamError):
        Run(a, breakers=breakers).run()
    assert breakers.state(a.route) == "open"  # the third failed request


def test_a_429_throttles_its_route_without_opening_the_breaker() -> None:
    breakers = CircuitBreakers()
    busy = from_upstream_status(429, "slow down", provider="mock", retry_after="2")
    a = Scripted(route("a", retries=0, breaker_failures=1), [busy])
    b = Scripted(route("b"), ["from b"])
    assert Run(a, b, breakers=breakers).run() == ("from b", b.route)
    assert breakers.state(a.route) == "throttled" and 1 < breakers.seconds_left(a.route) <= 2
    run = Run(a, b, breakers=breakers)  # the next request avoids a while it is throttled
    b.script = ["from b again"]
    assert run.run() == ("from b again", b.route) and run.outcomes()[0] == ("mock:a", "circuit throttled")


def test_a_request_error_neither_counts_nor_resets_the_breaker() -> None:
    breakers = CircuitBreakers()
    a = Scripted(route("a", retries=0, breaker_failures=2), [UpstreamError("x", status=500)])
    with pytest.raises(UpstreamError):
        Run(a, breakers=breakers).run()
    a.script = [InvalidRequest("bad")]
    with pytest.raises(InvalidRequest):
        Run(a, breakers=breakers).run()
    a.script = [UpstreamError("y", status=500)]
    with pytest.raises(UpstreamError):
        Run(a, breakers=breakers).run()
    assert breakers.state(a.route) == "open"  # 500, (400 ignored), 500: two in a row


def test_a_cancelled_attempt_propagates_and_frees_the_probe() -> None:
    breakers = CircuitBreakers()
    a = Scripted(route("a", breaker_failures=1, breaker_cooldown=0), [asyncio.CancelledError()])
    breakers.failure(a.route)
    assert breakers.state(a.route) == "half-open"
    with pytest.raises(asyncio.CancelledError):
        Run(a, breakers=breakers).run()
    assert breakers.allow(a.route)  # the probe slot was released: another request may probe
