"""Whether a shared dependency (Redis, the database) is worth calling right now.

A `Circuit` is kept per process and dependency. After a call fails, the
dependency is skipped for `retry_seconds`, so requests don't each pay a connect
timeout while it is down; then one caller probes it again, and the first
success closes the circuit. An outage is logged when it starts and then at
most once per `log_every` seconds, never once per request.

Checking a closed circuit is an attribute read: the healthy path costs nothing.
"""

from __future__ import annotations

import logging
import math
import time

import django.db
import redis.exceptions

logger = logging.getLogger(__name__)

# "Redis can't be reached or didn't answer in time" (not: a script error, which is a bug).
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)
# "The database can't answer" (connection refused or lost, server shutting down, not migrated).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (django.db.Error,)
# What the error boundary answers with a 503 instead of a 500, should any path let one escape.
DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    *DATABASE_ERRORS,
)


class Circuit:
    """One dependency's state in this process: up, or down until the next probe."""

    def __init__(self, name: str, retry_seconds: float = 2.0, log_every: float = 60.0) -> None:
        self.name = name
        self.retry_seconds = retry_seconds
        self.log_every = log_every
        self._down_since: float | None = None  # monotonic time of the first failure of this outage
        self._next_probe = 0.0
        self._logged = 0.0
        self.last_error = ""
        self.recovered_at = 0.0  # epoch seconds the last outage ended (0: none seen)

    @property
    def up(self) -> bool:
        return self._down_since is None

    def allow(self) -> bool:
        """Whether to call the dependency now: always while it is up; while it is down, only the
        one caller that comes first after each `retry_seconds` (the probe)."""
        if self._down_since is None:
            return True
        now = time.monotonic()
        if now < self._next_probe:
            return False
        self._next_probe = now + self.retry_seconds  # this caller probes; the others keep skipping
        return True

    def ok(self) -> None:
        """A call succeeded."""
        if self._down_since is None:
            return
        down_for = time.monotonic() - self._down_since
        self._down_since = None
        self.recovered_at = time.time()
        logger.warning("%s is reachable again after %.1fs", self.name, down_for)

    def failed(self, exc: BaseException) -> None:
        """A call failed: skip the dependency until the next probe."""
        now = time.monotonic()
        self._next_probe = now + self.retry_seconds
        self.last_error = type(exc).__name__
        if self._down_since is None:
            self._down_since = self._logged = now
            logger.warning(
                "%s is unreachable (%s: %s); carrying on without it, trying again every %gs",
                self.name,
                type(exc).__name__,
                exc,
                self.retry_seconds,
            )
        elif now - self._logged >= self.log_every:
            self._logged = now
            down_for = now - self._down_since
            logger.warning("%s still unreachable after %.0fs (%s: %s)", self.name, down_for, type(exc).__name__, exc)

    def retry_after(self) -> str:
        """A `retry-after` value for clients refused because of this outage: when the next probe is due."""
        return str(max(1, math.ceil(self._next_probe - time.monotonic())))
