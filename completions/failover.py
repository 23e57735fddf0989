"""Keeping requests served when an upstream fails: retries, fallbacks, circuit breakers, timeouts.

`call_with_failover()` walks the ordered routes of a request (the model's own
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings

from .errors import GatewayError, InvalidRequest, ServiceUnavailable, upstream_timeout
from .providers import Provider, Route
from .recorder import RequestRecord

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


breakers = CircuitBreakers()

Operation = Callable[[Provider, Route], Awaitable[T]]


def _attempt(route: Route, started: float, err: GatewayError | None = None, skipped: str = "") -> dict[str, Any]:
    entry: dict[str, Any] = {
        "route": route.label,
        "route_id": route.id,
        "model": route.model_name,
        "provider": route.provider,
        "ms": int((time.perf_counter() - started) * 1000),
        "ok": err is None and not skipped,
    }
    if err is not None:
        entry.update(status=err.status, error=err.code or err.type, message=err.message[:300])
    if skipped:
        entry["skipped"] = skipped
    return entry


async def call_with_failover(
    routes: list[Route],
    record: RequestRecord,
    provider_for: Callable[[Route], Provider],
    check: Callable[[Provider], None],
    operation: Operation[T],
) -> tuple[T, Route]:
    """Run `operation` on the first route that succeeds; raise the last error if none does.

    `check` rejects, before any upstream call, a request the route's provider
    cannot honour: on the requested model's own first route that is the
    client's 400; on another route the route is skipped.
    """
    last_error: GatewayError | None = None
    base_delay = settings.GATEWAY_RETRY_BASE_SECONDS
    for position, route in enumerate(routes):
        provider = provider_for(route)
        started = time.perf_counter()
        try:
            check(provider)
        except InvalidRequest as exc:
            if position == 0:
                raise
            record.attempts.append(_attempt(route, started, skipped="unsupported parameters"))
            last_error = last_error or exc
            continue
        if not breakers.allow(route):
            record.attempts.append(_attempt(route, started, skipped="circuit open"))
            last_error = last_error or ServiceUnavailable(
                f"Every route for `{record.model}` is failing and temporarily disabled; retry shortly.",
                code="circuit_open",
                headers={"retry-after": str(int(settings.GATEWAY_BREAKER_COOLDOWN))},
            )
            continue
        for retry in range(route.max_retries + 1):
            if retry:
                delay = backoff_delay(retry, base_delay)
                hinted = retry_after_seconds(last_error) if last_error else None
                if hinted is not None:
                    if hinted > settings.GATEWAY_MAX_RETRY_AFTER:
                        break  # the upstream wants a long pause: try the next route instead
                    delay = max(delay, hinted)
                await asyncio.sleep(delay)
                if not breakers.allow(route):
                    break
            started = time.perf_counter()
            try:
                result = await operation(provider, route)
            except GatewayError as exc:
                record.attempts.append(_attempt(route, started, exc))
                last_error = exc
                if not is_route_failure(exc):
                    breakers.release_probe(route)
                    raise
                breakers.failure(route)
                if not exc.retryable:
                    break  # a broken route (bad credential, unknown model): next route
                continue
            except BaseException:
                breakers.release_probe(route)
                raise
            breakers.success(route)
            record.attempts.append(_attempt(route, started))
            return result, route
    assert last_error is not None
    raise last_error


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
