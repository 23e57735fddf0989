"""The gateway's process state, built once at startup.

Everything a worker keeps between requests lives on one `Gateway` object: the
route table and its provider clients, the circuit breakers, the request-log
writer, the limiter and the API-key cache. The ASGI entry point builds it
(`install(build())`); the request path reaches it through the request
(`request.gateway`, set by the gateway handler), and code outside a request
(signals, management commands) through `current()`. Tests install a fresh one
instead of resetting module globals by hand.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from django.conf import settings

from .auth import KeyCache
from .circuit import Circuit
from .failover import CircuitBreakers
from .keys import KeyUseRecorder
from .limits import Limiter, LocalLimiter, RedisLimiter
from .readiness import Readiness
from .recorder import LogWriter
from .routing import Router, bump_version
from .shared import SharedCache


@dataclass
class Gateway:
    """One worker process's long-lived state.

    `shared` (the shared cache, with the process's Redis circuit) and `database` (the database
    circuit) are the same objects the router, the key cache and the limiter use, so one failure
    seen anywhere in the process spares every other request the wait.
    """

    router: Router
    breakers: CircuitBreakers
    log: LogWriter
    limiter: Limiter
    keys: KeyCache
    shared: SharedCache = field(default_factory=SharedCache)
    database: Circuit = field(default_factory=lambda: Circuit("database"))
    readiness: Readiness = field(default_factory=Readiness)
    inflight: int = 0  # exchanges opened and not yet closed (shutdown waits for them to close)

    async def aclose(self) -> None:
        """Release upstream connection pools (shutdown)."""
        await self.router.aclose()


def make_limiter(
    redis: Circuit | None = None, database: Circuit | None = None, log: LogWriter | None = None
) -> Limiter:
    """Limits in Redis when REDIS_URL is set (shared by every worker), else in this process."""
    if not settings.REDIS_URL:
        return LocalLimiter(database=database)

    async def logged() -> bool:
        return log is None or await asyncio.to_thread(log.flush, 30.0)

    return RedisLimiter(
        settings.REDIS_URL,
        settings.GATEWAY_REDIS_PREFIX,
        circuit=redis,
        database=database,
        workers=settings.GATEWAY_WORKERS,
        timeout=settings.GATEWAY_REDIS_TIMEOUT,
        logged=logged,
    )


def make_log_writer() -> LogWriter:
    """The request-log writer with the hooks that run in each batch's transaction."""
    from .usage import rollup

    writer = LogWriter(max_pending=settings.GATEWAY_LOG_MAX_PENDING)
    writer.hooks.extend([rollup, KeyUseRecorder()])
    return writer


def build() -> Gateway:
    retry = settings.GATEWAY_DEPENDENCY_RETRY_SECONDS
    shared = SharedCache(Circuit("Redis", retry))
    database = Circuit("database", retry)
    log = make_log_writer()
    return Gateway(
        router=Router(shared, database),
        breakers=CircuitBreakers(),
        log=log,
        limiter=make_limiter(shared.circuit, database, log),
        keys=KeyCache(shared, database),
        shared=shared,
        database=database,
    )


_current: Gateway | None = None


def install(gateway: Gateway) -> Gateway:
    """Make `gateway` this process's state."""
    global _current
    _current = gateway
    return gateway


def routes_changed() -> None:
    """A route was saved: this process reloads its table at once, every other within its check interval."""
    gateway = current()
    bump_version()
    gateway.router.invalidate()


def current() -> Gateway:
    """This process's state, built on first use (management commands, the admin's signals)."""
    return _current if _current is not None else install(build())
