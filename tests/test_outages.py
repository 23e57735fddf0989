"""Outages of Redis and PostgreSQL: the gateway keeps serving what it can, answers a 503 with
`retry-after` (never a 500) for what it can't, and its limits are right again once the dependency
is back."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from typing import Any

import httpx
import pytest
import redis
from django.db import OperationalError

from completions import auth
from completions import shared as shared_module
from completions.app import current
from completions.auth import KeyCache
from completions.caller import Caller, Limits, Scope
from completions.circuit import Circuit
from completions.db import run_db
from completions.errors import QuotaExceeded, RateLimited, ServiceUnavailable
from completions.keys import KEY_PREFIX, create_api_key
from completions.limits import RedisLimiter
from completions.recorder import RequestRecord
from completions.shared import SharedCache
from completions.usage import rollup
from tests.conftest import free_port
from tests.services import PrivateRedis

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


def dead_redis_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


def add_spend(key_id: int, user_id: int, tokens: int) -> None:
    """What the log writer adds to the roll-ups for a request that used `tokens`."""
    rollup(
        [RequestRecord(request_id=uuid.uuid4().hex, key_id=key_id, user_id=user_id, model="m", prompt_tokens=tokens)]
    )


def test_without_redis_each_worker_admits_its_share_of_every_limit(transactional_db: Any, user: Any) -> None:
    key, _ = create_api_key(user, "budget", token_budget=1000, budget_period="total")
    add_spend(key.pk, user.pk, 200)  # spent before Redis went away
    limiter = RedisLimiter(dead_redis_url(), "gw-dead", circuit=Circuit("Redis", 30), workers=2, timeout=0.5)
    rate = [Scope("key", key.pk + 10_000, Limits(rpm=10, tpm=1000))]
    budget = [Scope("key", key.pk, Limits(token_budget=1000, period="total"))]

    async def run() -> tuple[int, int, int, bool]:
        admitted = 0
        for _ in range(8):
            try:
                a = await limiter.admit(rate, 10, 0)
                assert a.local
                admitted += 1
            except RateLimited:
                pass
        # A request bigger than this worker's 500 tokens a minute, within the key's 1000, is served.
        large = await limiter.admit([Scope("key", key.pk + 20_000, Limits(tpm=1000))], 800, 0)
        spent = 0
        for _ in range(10):
            try:
                a = await limiter.admit(budget, 100, 0)
            except QuotaExceeded:
                break
            await limiter.settle(a, 100, 0)
            spent += 100
        return admitted, spent, large.estimate_tokens, limiter.circuit.up

    admitted, spent, large, up = asyncio.run(run())
    assert admitted == 5  # 10 a minute over two workers
    assert large == 800
    assert spent == 400  # 200 spent + (1000 - 200) / 2 workers = 600: four more requests of 100
    assert not up


def test_budget_counters_redis_missed_are_rebuilt_from_the_rollups(transactional_db: Any, user: Any) -> None:
    """A partition: Redis keeps its counters but the worker can't reach it for a while. Afterwards
    the counters hold the spend of the outage, and reservations settled meanwhile are released."""
    key, _ = create_api_key(user, "budget", token_budget=1000, budget_period="total")
    budget = [Scope("key", key.pk, Limits(token_budget=1000, period="total"))]
    with PrivateRedis() as server:
        limiter = RedisLimiter(server.url, "gw-reconcile", circuit=Circuit("Redis", 0.1), workers=2)
        direct = redis.Redis.from_url(server.url, decode_responses=True)
        base = f"gw-reconcile:lim:key:{key.pk}:budget:total"

        def partition(cut: bool) -> None:
            limiter.url = dead_redis_url() if cut else server.url
            limiter._clients.clear()

        async def run() -> tuple[int, int]:
            first = await limiter.admit(budget, 100, 0)
            await limiter.settle(first, 100, 0)
            await run_db(add_spend, key.pk, user.pk, 100)
            in_flight = await limiter.admit(budget, 100, 0)  # reserved in Redis ...
            partition(True)
            await limiter.settle(in_flight, 100, 0)  # ... settled while Redis can't be reached
            await run_db(add_spend, key.pk, user.pk, 100)
            during = 0
            while during < 1000:
                try:
                    a = await limiter.admit(budget, 100, 0)
                except QuotaExceeded:
                    break
                assert a.local
                await limiter.settle(a, 100, 0)
                await run_db(add_spend, key.pk, user.pk, 100)
                during += 100
            partition(False)
            await asyncio.sleep(0.15)
            await limiter.admit([Scope("key", key.pk + 10_000, Limits(rpm=100))], 1, 0)  # Redis answers again
            assert limiter._reconciling is not None
            await limiter._reconciling
            after = 0
            while after < 1000:
                try:
                    a = await limiter.admit(budget, 100, 0)
                except QuotaExceeded:
                    break
                await limiter.settle(a, 100, 0)
                after += 100
            return during, after

        during, after = asyncio.run(run())
        assert during == 400  # 200 spent + (1000 - 200) / 2 workers
        assert direct.zcard(f"{base}:held") == 0  # the in-flight reservation was released
        assert after == 400  # 600 spent by then: the counters were rebuilt, not left at 100
        assert int(direct.get(f"{base}:tokens")) == 1000


def test_readyz_reports_the_backlog_and_pending_migrations_and_is_cached(gateway: Any, monkeypatch: Any) -> None:
    state = current()
    checks = []
    real = state.readiness._pending_migrations

    def counted() -> int:
        checks.append(1)
        return real()

    monkeypatch.setattr(state.readiness, "_pending_migrations", counted)
    ready = httpx.get(gateway.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert {name for name, check in ready.json()["checks"].items() if check["ok"]} == {
        "database",
        "migrations",
        "redis",
        "request_log",
    }
    for _ in range(20):  # a load balancer polling hard
        assert httpx.get(gateway.url + "/readyz").status_code == 200
    assert len(checks) <= 2  # one check a second

    # The log writer is stuck (the database is slow): the backlog passes its bound.
    release = threading.Event()
    state.log.max_pending = 2
    state.log.hooks.append(lambda batch: release.wait(10))
    for i in range(3):
        state.log.submit(RequestRecord(request_id=f"backlog-{i}"))
    time.sleep(1.1)
    backlog = httpx.get(gateway.url + "/readyz")
    release.set()
    assert backlog.status_code == 503 and backlog.headers["retry-after"] == "1"
    body = backlog.json()
    assert body["failing"] == ["request_log"] and body["checks"]["request_log"]["pending"] >= 2
    assert body["error"]["code"] == "service_unavailable"
    assert state.log.flush(10)
    state.log.hooks.pop()

    from django.db.migrations.executor import MigrationExecutor

    monkeypatch.setattr(MigrationExecutor, "migration_plan", lambda self, targets: [("completions", "9999_new")])
    state.readiness._migrated = False
    time.sleep(1.1)
    migrations = httpx.get(gateway.url + "/readyz")
    assert migrations.status_code == 503 and migrations.json()["failing"] == ["migrations"]
    assert migrations.json()["checks"]["migrations"]["pending"] == 1
