"""Keeping requests served when an upstream fails: retries, fallbacks, circuit breakers, timeouts.

`Failover` walks the ordered routes of a request (the model's own
routes by weight, then its fallbacks'). On each route it retries connect
errors, timeouts, 429 and 5xx with exponential backoff and full jitter; a
route that keeps failing hands over to the next. All of this happens before
the first byte reaches the client: for streams, an attempt succeeds when the
upstream's first chunk arrived. Every attempt is recorded (route, outcome,
duration) in the request's log row.

A per-route circuit breaker skips a route that failed `failures` times in a
row for `cooldown` seconds, then lets one probe through: success closes it,
failure opens it again.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings

from .errors import GatewayError, InvalidRequest, ServiceUnavailable, upstream_timeout
from .protocol import ChatCompletionRequest
from .providers import Prepared, Provider, Route

T = TypeVar("T")

# Upstream answers that say "this route is broken" rather than "this request is wrong".
ROUTE_FAILURE_STATUSES = frozenset({401, 403, 404})


def is_route_failure(err: GatewayError) -> bool:
    """Whether `err` should count against the route and move on to the next one."""
    return err.retryable or err.status in ROUTE_FAILURE_STATUSES


def backoff_delay(retry: int, base: float, cap: float = 8.0, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**(retry-1))]."""
    return (rng or random).uniform(0, min(cap, base * 2 ** (retry - 1)))


def retry_after_seconds(err: GatewayError) -> float | None:
    value = err.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@dataclass
class BreakerState:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False


class CircuitBreakers:
    """One breaker per route, in this process."""

    def __init__(self) -> None:
        self._states: dict[str, BreakerState] = {}

    @staticmethod
    def _key(route: Route) -> str:
        return route.label

    @staticmethod
    def _limits(route: Route) -> tuple[int, float]:
        failures = int(route.options.get("breaker_failures", settings.GATEWAY_BREAKER_FAILURES))
        cooldown = float(route.options.get("breaker_cooldown", settings.GATEWAY_BREAKER_COOLDOWN))
        return failures, cooldown

    def state(self, route: Route) -> str:
        """closed, open or half-open (a probe may pass)."""
        st = self._states.get(self._key(route))
        if st is None or st.opened_at is None:
            return "closed"
        _, cooldown = self._limits(route)
        return "half-open" if time.monotonic() - st.opened_at >= cooldown else "open"

    def allow(self, route: Route) -> bool:
        """Whether a request may use `route` now; in half-open state, one probe at a time."""
        state = self.state(route)
        if state == "closed":
            return True
        if state == "open":
            return False
        st = self._states[self._key(route)]
        if st.probing:
            return False
        st.probing = True
        return True

    def success(self, route: Route) -> None:
        self._states.pop(self._key(route), None)

    def failure(self, route: Route) -> None:
        st = self._states.setdefault(self._key(route), BreakerState())
        st.failures += 1
        st.probing = False
        threshold, _ = self._limits(route)
        if st.failures >= threshold or st.opened_at is not None:
            st.opened_at = time.monotonic()

    def release_probe(self, route: Route) -> None:
        """A probe that ended without a verdict (e.g. the client left) frees the slot."""
        st = self._states.get(self._key(route))
        if st is not None:
            st.probing = False

    def reset(self) -> None:
        self._states.clear()


def attempt_entry(route: Route, started: float, err: GatewayError | None = None, skipped: str = "") -> dict[str, Any]:
    """One attempt as the log row's `attempts` list keeps it."""
    entry: dict[str, Any] = {
        "route": route.label,
        "route_id": route.id,
        "model": route.model_name,
        "provider": route.provider,
        "ms": int((time.perf_counter() - started) * 1000),
        "ok": err is None and not skipped,
    }
    if err is not None:
        entry.update(status=err.status, error=err.code or err.type, message=err.loggable_message()[:300])
    if skipped:
        entry["skipped"] = skipped
    return entry


class Attempt:
    """One call to one route. Used as `async with attempt:` around the call.

    On leaving the block it records the outcome and tells the plan; a failure
    that another attempt may cure is swallowed (the plan yields the next
    attempt), any other error propagates to the caller.
    """

    def __init__(self, plan: Failover, route: Route, provider: Provider, prepared: Prepared | None) -> None:
        self.plan = plan
        self.route = route
        self.provider = provider
        self.prepared: Any = prepared
        self.error: GatewayError | None = None
        self.ok = False
        self.started = 0.0

    async def __aenter__(self) -> Attempt:
        self.started = time.perf_counter()
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        return self.plan.settle(self, exc)


class Failover:
    """The attempts of one request over its ordered routes, as an async iterator.

        async for attempt in Failover(routes, breakers, attempts, model, request):
            async with attempt:
                answer = await attempt.provider.complete(attempt.prepared)

    The loop ends after the first attempt that succeeds; when every route failed,
    the iteration raises the last upstream error. Each route's provider prepares
    the request once (`Provider.prepare`): a parameter the requested model's first
    route cannot honour is the client's 400; on a later route it skips the route.
    """

    def __init__(
        self,
        routes: list[Route],
        breakers: CircuitBreakers,
        provider_for: Callable[[Route], Provider],
        attempts: list[dict[str, Any]],
        model: str,
        request: ChatCompletionRequest | None = None,
    ) -> None:
        self.routes = routes
        self.breakers = breakers
        self.provider_for = provider_for
        self.attempts = attempts
        self.model = model
        self.request = request
        self.last_error: GatewayError | None = None

    async def __aiter__(self) -> AsyncIterator[Attempt]:
        base_delay = settings.GATEWAY_RETRY_BASE_SECONDS
        for position, route in enumerate(self.routes):
            started = time.perf_counter()
            provider = self.provider_for(route)
            try:
                prepared = provider.prepare(self.request) if self.request is not None else None
            except InvalidRequest as exc:
                if position == 0:
                    raise
                self.attempts.append(attempt_entry(route, started, skipped="unsupported parameters"))
                self.last_error = self.last_error or exc
                continue
            if not self.breakers.allow(route):
                self.attempts.append(attempt_entry(route, started, skipped="circuit open"))
                self.last_error = self.last_error or self._circuit_open()
                continue
            for retry in range(route.max_retries + 1):
                if retry:
                    delay = self._retry_delay(retry, base_delay)
                    if delay is None:
                        break  # the upstream wants a long pause: try the next route instead
                    await asyncio.sleep(delay)
                    if not self.breakers.allow(route):
                        break
                attempt = Attempt(self, route, provider, prepared)
                yield attempt
                if attempt.ok:
                    return
                if attempt.error is not None and not attempt.error.retryable:
                    break  # a broken route (bad credential, unknown model): next route
        assert self.last_error is not None
        raise self.last_error

    def settle(self, attempt: Attempt, exc: BaseException | None) -> bool:
        """Record how `attempt` ended; True when the plan goes on to another attempt."""
        route = attempt.route
        if exc is None:
            attempt.ok = True
            self.breakers.success(route)
            self.attempts.append(attempt_entry(route, attempt.started))
            return False
        if not isinstance(exc, GatewayError):
            self.breakers.release_probe(route)  # cancelled or a bug: no verdict on the route
            return False
        attempt.error = self.last_error = exc
        self.attempts.append(attempt_entry(route, attempt.started, exc))
        if not is_route_failure(exc):
            self.breakers.release_probe(route)
            return False  # the request itself is wrong: the client's error
        self.breakers.failure(route)
        return True

    def _retry_delay(self, retry: int, base: float) -> float | None:
        """Seconds to wait before retry number `retry`, or None to move on to the next route."""
        delay = backoff_delay(retry, base)
        hinted = retry_after_seconds(self.last_error) if self.last_error else None
        if hinted is None:
            return delay
        if hinted > settings.GATEWAY_MAX_RETRY_AFTER:
            return None
        return max(delay, hinted)

    def _circuit_open(self) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"Every route for `{self.model}` is failing and temporarily disabled; retry shortly.",
            code="circuit_open",
            headers={"retry-after": str(int(settings.GATEWAY_BREAKER_COOLDOWN))},
        )


async def first_with_timeout(iterator: Any, seconds: float, provider: str) -> Any:
    """The next item of an async iterator within `seconds`, else a 504-mapped error."""
    try:
        async with asyncio.timeout(seconds):
            return await anext(iterator)
    except TimeoutError:
        raise upstream_timeout(provider, f"no data within {seconds:g} s") from None


async def with_timeout(awaitable: Awaitable[T], seconds: float, provider: str) -> T:
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        raise upstream_timeout(provider, f"no answer within {seconds:g} s") from None
