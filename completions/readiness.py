"""GET /readyz: whether this worker has what it needs to serve, for a load balancer.

Ready means: the database answers and every migration is applied, Redis answers
(when REDIS_URL is set), and the request-log backlog is under the writer's bound.
Otherwise the answer is a 503 naming the failing parts. The gateway keeps serving
what it can while not ready (see the README's degradation policy); readiness says
that something is wrong, not that every request fails.

A worker checks at most once a second (concurrent polls share one check), so a
load balancer polling hard can't load the database. Each check waits at most
`timeout` seconds per dependency. Error details go to the log, not to the
unauthenticated client, which sees only the name of the exception.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection

from .db import run_db
from .errors import error_body

if TYPE_CHECKING:
    from .app import Gateway

logger = logging.getLogger(__name__)

Report = tuple[bool, dict[str, Any]]


class Readiness:
    """This worker's readiness, checked at most once per `ttl` seconds."""

    def __init__(self, ttl: float = 1.0, timeout: float = 2.0) -> None:
        self.ttl = ttl
        self.timeout = timeout
        self._result: tuple[float, Report] | None = None
        self._running: asyncio.Task[Report] | None = None
        self._migrated = False  # once every migration is applied, they stay applied for this code
        self._failing: list[str] = []

    async def check(self, gateway: Gateway) -> Report:
        """(ready, the body of /readyz)."""
        if self._result is not None and self._result[0] > time.monotonic():
            return self._result[1]
        if self._running is None:
            self._running = asyncio.get_running_loop().create_task(self._check(gateway))
        return await asyncio.shield(self._running)

    async def _check(self, gateway: Gateway) -> Report:
        try:
            checks = {
                **await self._database(gateway),
                "redis": await self._redis(gateway),
                "request_log": self._backlog(gateway),
            }
            failing = [name for name, state in checks.items() if not state["ok"] and state.get("checked", True)]
            body: dict[str, Any] = {"status": "not ready" if failing else "ready", "checks": checks}
            if failing:
                body["failing"] = failing
                body |= error_body(f"Not ready: {', '.join(failing)}.", "server_error", None, "service_unavailable")
            self._log(failing, checks)
            report = (not failing, body)
            self._result = (time.monotonic() + self.ttl, report)
            return report
        finally:
            self._running = None

    async def _database(self, gateway: Gateway) -> dict[str, dict[str, Any]]:
        try:
            pending = await asyncio.wait_for(run_db(self._pending_migrations), self.timeout)
            gateway.database.ok()  # an answer: requests needn't wait for their own probe
        except Exception as exc:
            # Migrations can't be checked then; only the database is named as failing.
            return {"database": _failed(exc), "migrations": {"ok": False, "checked": False}}
        migrations: dict[str, Any] = {"ok": pending == 0}
        if pending:
            migrations["pending"] = pending
        return {"database": {"ok": True}, "migrations": migrations}

    def _pending_migrations(self) -> int:
        """How many migrations are not applied (runs on the database thread; raises if it can't answer)."""
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        if self._migrated:
            return 0
        from django.db.migrations.executor import MigrationExecutor

        executor = MigrationExecutor(connection)
        pending = len(executor.migration_plan(executor.loader.graph.leaf_nodes()))
        self._migrated = pending == 0
        return pending

    async def _redis(self, gateway: Gateway) -> dict[str, Any]:
        if not settings.REDIS_URL:
            return {"ok": True, "configured": False}
        ping = getattr(gateway.limiter, "ping", None)
        if ping is None:
            return {"ok": True, "configured": True}
        try:
            await asyncio.wait_for(ping(), self.timeout)
        except Exception as exc:
            return _failed(exc)
        gateway.shared.circuit.ok()
        return {"ok": True}

    @staticmethod
    def _backlog(gateway: Gateway) -> dict[str, Any]:
        pending, bound = gateway.log.pending(), gateway.log.max_pending
        return {"ok": pending < bound, "pending": pending, "max_pending": bound}

    def _log(self, failing: list[str], checks: dict[str, Any]) -> None:
        """Log changes of readiness (not every check)."""
        if failing != self._failing:
            if failing:
                logger.warning("not ready: %s", {name: checks[name] for name in failing})
            else:
                logger.warning("ready again")
            self._failing = failing


def _failed(exc: BaseException) -> dict[str, Any]:
    logger.debug("readiness check failed: %s: %s", type(exc).__name__, exc)
    return {"ok": False, "error": type(exc).__name__}
