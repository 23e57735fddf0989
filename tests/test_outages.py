"""Outages of Redis and PostgreSQL: the gateway keeps serving what it can, answers a 503 with
`retry-after` (never a 500) for what it can't, and its limits are right again once the dependency
is back."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import pytest
import redis
from django.db import OperationalError

from completions import auth
from completions import shared as shared_module
from completions.auth import KeyCache
from completions.caller import Caller
from completions.circuit import Circuit
from completions.errors import ServiceUnavailable
from completions.keys import KEY_PREFIX
from completions.shared import SharedCache

# ---- the pieces, in process ------------------------------------------------------------------------


def test_a_circuit_skips_a_failed_dependency_logs_once_and_probes_again(caplog: Any) -> None:
    circuit = Circuit("Thing", retry_seconds=0.2)
    assert circuit.allow()
    with caplog.at_level(logging.WARNING, logger="completions.circuit"):
        for _ in range(50):
            circuit.failed(redis.ConnectionError("Connection refused"))
    assert not circuit.up and not circuit.allow()
    assert len(caplog.records) == 1 and "Thing is unreachable" in caplog.text
    assert circuit.retry_after() == "1"
    time.sleep(0.25)
    assert circuit.allow()  # one caller probes ...
    assert not circuit.allow()  # ... the others keep skipping meanwhile
    circuit.ok()
    assert circuit.up and circuit.allow() and circuit.recovered_at > 0


class StoppedRedis:
    """Django's cache as it behaves with Redis stopped: every call raises, and is counted."""

    def __init__(self) -> None:
        self.calls = 0

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    get = set = delete = delete_many = _refuse


def test_key_lookups_outlive_redis_and_database_outages(transactional_db: Any, monkeypatch: Any, settings: Any) -> None:
    settings.GATEWAY_KEY_CACHE_SECONDS = 0.05
    caller = Caller(1, 1, "sk-gw-abc", "k", None, False)
    database = {"up": True}

    def read(key_hash: str) -> Caller:
        if not database["up"]:
            raise OperationalError("connection refused")
        return caller

    monkeypatch.setattr(auth, "_read", read)
    secret = KEY_PREFIX + uuid.uuid4().hex

    # Redis down, the database up: lookups read the database, and skip Redis while it is down.
    stopped = StoppedRedis()
    monkeypatch.setattr(shared_module, "cache", stopped)
    keys = KeyCache(SharedCache(Circuit("Redis", 30)), Circuit("database", 0.05))

    async def redis_down() -> tuple[Any, ...]:
        first = await keys.lookup(secret)
        calls = stopped.calls
        await asyncio.sleep(0.12)  # past the local entry and its grace period
        again = await keys.lookup(secret)
        redis_calls = stopped.calls - calls
        # Then the database goes down too: the last known state keeps being used ...
        database["up"] = False
        stale = []
        for _ in range(3):
            await asyncio.sleep(0.06)
            stale.append(await keys.lookup(secret))
        # ... and a key this process never saw is a 503, not a 500.
        with pytest.raises(ServiceUnavailable) as unknown:
            await keys.lookup(KEY_PREFIX + uuid.uuid4().hex)
        return first, again, redis_calls, stale, unknown.value

    first, again, redis_calls, stale, unknown = asyncio.run(redis_down())
    assert first == again == caller and stale == [caller] * 3
    assert stopped.calls == 1 and redis_calls == 0  # one failure opened the circuit
    assert unknown.status == 503 and unknown.code == "service_unavailable"
    assert int(unknown.headers["retry-after"]) >= 1

    # The shared cache up, the database down: a process that never saw the key (a restarted
    # worker) uses the shared entry, even one past its usual 300 s.
    monkeypatch.undo()
    monkeypatch.setattr(auth, "_read", read)
    monkeypatch.setattr(auth, "SHARED_TTL", 0)
    database["up"] = True
    asyncio.run(KeyCache(SharedCache(), Circuit("database", 0.05)).lookup(secret))
    database["up"] = False
    assert asyncio.run(KeyCache(SharedCache(), Circuit("database", 0.05)).lookup(secret)) == caller
