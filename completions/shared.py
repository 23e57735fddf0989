"""Django's cache (Redis when REDIS_URL is set) as an accelerator that never fails a request.

Every read and write of the shared cache on the gateway's paths goes through
`SharedCache`: while Redis can't be reached, a read is a miss (or `down`, for
callers that must tell the two apart) and a write is skipped, without an
exception and, thanks to the circuit, without waiting for Redis on every call.
A delete that could not reach Redis (a key revoked during an outage) is kept and
replayed once Redis answers again, so a stale entry doesn't outlive the outage.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.core.cache import cache

from .circuit import REDIS_ERRORS, Circuit

logger = logging.getLogger(__name__)

MAX_PENDING_DELETES = 10_000


class SharedCache:
    """The shared cache behind a circuit (the process's Redis circuit)."""

    def __init__(self, circuit: Circuit | None = None) -> None:
        self.circuit = circuit or Circuit("Redis")
        self._pending_deletes: set[str] = set()
        self._lock = threading.Lock()

    def get(self, key: str, default: Any = None, down: Any = None) -> Any:
        """The cached value, `default` when there is none, `down` when Redis can't be asked."""
        if not self._ready():
            return down
        try:
            value = cache.get(key, default)
        except REDIS_ERRORS as exc:
            self.circuit.failed(exc)
            return down
        self.circuit.ok()
        return value

    def set(self, key: str, value: Any, timeout: float | None) -> bool:
        """Store `value` (for `timeout` seconds; None: no expiry); False when Redis can't be reached."""
        if not self._ready():
            return False
        try:
            cache.set(key, value, timeout)
        except REDIS_ERRORS as exc:
            self.circuit.failed(exc)
            return False
        self.circuit.ok()
        return True

    def delete(self, key: str) -> None:
        """Delete `key` now, or as soon as Redis answers again."""
        if self._ready():
            try:
                cache.delete(key)
            except REDIS_ERRORS as exc:
                self.circuit.failed(exc)
            else:
                self.circuit.ok()
                return
        with self._lock:
            if len(self._pending_deletes) < MAX_PENDING_DELETES:
                self._pending_deletes.add(key)
            else:
                logger.error("too many shared-cache deletes wait for Redis; %s will expire on its own", key)

    def _ready(self) -> bool:
        """Whether to call Redis now; first replays the deletes an outage held back."""
        if not self.circuit.allow():
            return False
        if self._pending_deletes:
            with self._lock:
                keys, self._pending_deletes = self._pending_deletes, set()
            try:
                cache.delete_many(list(keys))
            except REDIS_ERRORS as exc:
                self.circuit.failed(exc)
                with self._lock:
                    self._pending_deletes |= keys
                return False
            self.circuit.ok()
        return True
