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
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings

from . import metrics
from .errors import GatewayError, InvalidRequest, ServiceUnavailable, upstream_timeout
from .protocol import ChatCompletionRequest
from .providers import Prepared, Provider, Route

T = TypeVar("T")

# How an inbound API prepares its request for one route's provider (raising InvalidRequest for what
# the route can't honour), when it is not the provider's own `prepare` of a chat request.
Preparer = Callable[[Provider], Prepared[Any]]

# Upstream answers that say "this route is broken" rather than "this request is wrong".
ROUTE_FAILURE_STATUSES = frozenset({401, 403, 404})


def is_route_failure(err: GatewayError) -> bool:
    """Whether `err` should count against the route and move on to the next one."""
    return err.retryable or err.status in ROUTE_FAILURE_STATUSES


def backoff_delay(retry: int, base: float, cap: float = 8.0, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**(retry-1))]."""
    return (rng or random).uniform(0, min(cap, base * 2 ** (retry - 1)))


def upstream_hint(err: GatewayError) -> float | None:
    """The upstream's own retry-after, in seconds (None when it gave none)."""
    return err.upstream_retry_after


@dataclass
class BreakerState:
    failures: int = 0  # failed requests in a row (not attempts)
    opened_at: float | None = None
    probing: bool = False
    last_failure: float = 0.0  # when the last failed request left this route (monotonic)
    throttled_until: float = 0.0  # an upstream 429's retry-after: back-pressure, not a failure


class CircuitBreakers:
    """One breaker per route, in this process.

    A breaker counts failed *requests* (a request that left the route without an answer
    after its retries), not attempts; it opens after `breaker_failures` of them in a row and
    lets one probe through after `breaker_cooldown`. A request error (400) neither counts nor
    resets it. An upstream 429 is back-pressure: the route is avoided until its retry-after
    has passed, and the breaker is not touched.
    """

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
        """closed, open, half-open (a probe may pass) or throttled (an upstream 429's retry-after)."""
        st = self._states.get(self._key(route))
        if st is None:
            return "closed"
        now = time.monotonic()
        if st.opened_at is not None:
            _, cooldown = self._limits(route)
            return "half-open" if now - st.opened_at >= cooldown else "open"
        return "throttled" if now < st.throttled_until else "closed"

    def allow(self, route: Route) -> bool:
        """Whether a request may use `route` now; in half-open state, one probe at a time."""
        state = self.state(route)
        if state == "closed":
            return True
        if state != "half-open":
            return False
        st = self._states[self._key(route)]
        if st.probing:
            return False
        st.probing = True
        return True

    def seconds_left(self, route: Route) -> float:
        """How long until `route` may be tried again (0 when it may be now)."""
        st = self._states.get(self._key(route))
        if st is None:
            return 0.0
        now = time.monotonic()
        if st.opened_at is not None:
            _, cooldown = self._limits(route)
            return max(0.0, st.opened_at + cooldown - now)
        return max(0.0, st.throttled_until - now)

    def last_failure(self, route: Route) -> float:
        st = self._states.get(self._key(route))
        return st.last_failure if st is not None else 0.0

    def success(self, route: Route) -> None:
        st = self._states.pop(self._key(route), None)
        if st is not None and st.opened_at is not None:
            metrics.breaker_closed(self._key(route))

    def failure(self, route: Route) -> None:
        """One request failed on `route` (after its retries there)."""
        st = self._states.setdefault(self._key(route), BreakerState())
        st.failures += 1
        st.probing = False
        st.last_failure = time.monotonic()
        threshold, _ = self._limits(route)
        if st.failures >= threshold or st.opened_at is not None:
            if st.opened_at is None:
                metrics.breaker_opened(self._key(route))
            st.opened_at = time.monotonic()

    def throttle(self, route: Route, seconds: float) -> None:
        """The upstream asked for a pause (429 with retry-after): avoid the route until then."""
        st = self._states.setdefault(self._key(route), BreakerState())
        st.throttled_until = max(st.throttled_until, time.monotonic() + seconds)
        st.probing = False

    def release_probe(self, route: Route) -> None:
        """A probe that ended without a verdict (e.g. the client left) frees the slot."""
        st = self._states.get(self._key(route))
        if st is not None:
            st.probing = False

    def reset(self) -> None:
        for key, st in self._states.items():
            if st.opened_at is not None:
                metrics.breaker_closed(key)
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

        async for attempt in Failover(routes, breakers, provider_for, attempts, model, request):
            async with attempt:
                answer = await attempt.provider.complete(attempt.prepared)

    The loop ends after the first attempt that succeeds; when every route failed,
    the iteration raises the last upstream error. Each route's provider prepares
    the request once (`Provider.prepare`): a parameter the requested model's first
    route cannot honour is the client's 400; on a later route it skips the route.
    When every route is avoided (breaker open, or throttled by a 429), the request
    still goes to the one that failed least recently, once (panic mode), rather than
    refusing everyone.
    """

    def __init__(
        self,
        routes: list[Route],
        breakers: CircuitBreakers,
        provider_for: Callable[[Route], Provider],
        attempts: list[dict[str, Any]],
        model: str,
        request: ChatCompletionRequest | None = None,
        prepare: Preparer | None = None,
    ) -> None:
        self.routes = routes
        self.breakers = breakers
        self.provider_for = provider_for
        self.attempts = attempts
        self.model = model
        self.request = request
        self.prepare = prepare
        self.last_error: GatewayError | None = None

    def _prepared(self, provider: Provider) -> Prepared[Any] | None:
        """What every attempt on `provider`'s route sends: the inbound API's own preparation if it
        brought one (e.g. Messages, natively on Anthropic routes), else the provider's of the chat request."""
        if self.prepare is not None:
            return self.prepare(provider)
        return provider.prepare(self.request) if self.request is not None else None

    async def __aiter__(self) -> AsyncIterator[Attempt]:
        avoided: list[tuple[Route, Provider, Prepared | None]] = []
        tried = False
        for position, route in enumerate(self.routes):
            started = time.perf_counter()
            provider = self.provider_for(route)
            try:
                prepared = self._prepared(provider)
            except InvalidRequest as exc:
                if position == 0:
                    raise
                self.attempts.append(attempt_entry(route, started, skipped="unsupported parameters"))
                self.last_error = self.last_error or exc
                continue
            if not self.breakers.allow(route):
                self.attempts.append(attempt_entry(route, started, skipped=f"circuit {self.breakers.state(route)}"))
                avoided.append((route, provider, prepared))
                continue
            tried = True
            async for attempt in self._on_route(route, provider, prepared, retries=route.max_retries):
                yield attempt
                if attempt.ok:
                    return
        if not tried and avoided:
            if not settings.GATEWAY_BREAKER_PANIC:
                raise self._circuit_open([route for route, _, _ in avoided])
            route, provider, prepared = min(avoided, key=lambda a: self.breakers.last_failure(a[0]))
            async for attempt in self._on_route(route, provider, prepared, retries=0):
                yield attempt
                if attempt.ok:
                    return
        assert self.last_error is not None
        raise self.last_error

    async def _on_route(
        self, route: Route, provider: Provider, prepared: Prepared | None, retries: int
    ) -> AsyncIterator[Attempt]:
        """The attempts on one route: the first, then retries with backoff while they may help.
        A request that leaves the route without an answer counts once against its breaker."""
        base_delay = settings.GATEWAY_RETRY_BASE_SECONDS
        failed = False
        for retry in range(retries + 1):
            if retry:
                delay = self._retry_delay(retry, base_delay)
                if delay is None:
                    break  # the upstream wants a long pause: try the next route instead
                await asyncio.sleep(delay)
            attempt = Attempt(self, route, provider, prepared)
            yield attempt
            if attempt.ok:
                return
            error = attempt.error
            assert error is not None
            if error.status == 429:
                self.breakers.throttle(route, upstream_hint(error) or 1.0)
                continue
            failed = True
            if not error.retryable:
                break  # a broken route (bad credential, unknown model): next route
        if failed:
            self.breakers.failure(route)

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
        return True

    def _retry_delay(self, retry: int, base: float) -> float | None:
        """Seconds to wait before retry number `retry`, or None to move on to the next route.

        Only the upstream's own retry-after lengthens the backoff, never a hint the gateway made."""
        delay = backoff_delay(retry, base)
        hinted = upstream_hint(self.last_error) if self.last_error else None
        if hinted is None:
            return delay
        if hinted > settings.GATEWAY_MAX_RETRY_AFTER:
            return None
        return max(delay, hinted)

    def _circuit_open(self, routes: list[Route]) -> ServiceUnavailable:
        left = min(self.breakers.seconds_left(route) for route in routes)
        return ServiceUnavailable(
            f"Every route for `{self.model}` is failing and temporarily disabled; retry shortly.",
            code="circuit_open",
            headers={"retry-after": str(max(1, math.ceil(left)))},
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
