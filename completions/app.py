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

from dataclasses import dataclass

from django.conf import settings

from .auth import KeyCache
from .failover import CircuitBreakers
from .keys import KeyUseRecorder
from .limits import Limiter, LocalLimiter, RedisLimiter
from .recorder import LogWriter
from .routing import Router, bump_version


@dataclass
class Gateway:
    """One worker process's long-lived state."""

    router: Router
    breakers: CircuitBreakers
    log: LogWriter
    limiter: Limiter
    keys: KeyCache
    inflight: int = 0  # exchanges opened and not yet closed (shutdown waits for them to close)

    async def aclose(self) -> None:
        """Release upstream connection pools (shutdown)."""
        await self.router.aclose()


def make_limiter() -> Limiter:
    """Limits in Redis when REDIS_URL is set (shared by every worker), else in this process."""
    if settings.REDIS_URL:
        return RedisLimiter(settings.REDIS_URL, settings.GATEWAY_REDIS_PREFIX)
    return LocalLimiter()


def make_log_writer() -> LogWriter:
    """The request-log writer with the hooks that run in each batch's transaction."""
    from .usage import rollup

    writer = LogWriter()
    writer.hooks.extend([rollup, KeyUseRecorder()])
    return writer


def build() -> Gateway:
    return Gateway(
        router=Router(),
        breakers=CircuitBreakers(),
        log=make_log_writer(),
        limiter=make_limiter(),
        keys=KeyCache(),
    )


_current: Gateway | None = None


def install(gateway: Gateway) -> Gateway:
    """Make `gateway` this process's state."""
    global _current
    _current = gateway
    return gateway


def routes_changed() -> None:
    """A route was saved: this process reloads its table at once, every other within its check interval."""
    bump_version()
    current().router.invalidate()


def current() -> Gateway:
    """This process's state, built on first use (management commands, the admin's signals)."""
    return _current if _current is not None else install(build())
