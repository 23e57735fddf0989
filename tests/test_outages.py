"""Outages of Redis and PostgreSQL: the gateway keeps serving what it can, answers a 503 with
`retry-after` (never a 500) for what it can't, and its limits are right again once the dependency
is back. /readyz names what is missing.

The fault tests run the gateway as a deployment does (gunicorn with `gunicorn.conf.py`, two
workers) against private Redis and PostgreSQL servers that they stop and restart; the machine's
shared servers are never touched.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
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
from completions.models import RequestLog
from completions.recorder import RequestRecord
from completions.shared import SharedCache
from completions.usage import rollup
from tests.conftest import free_port
from tests.processes import ROOT, GatewayProcess
from tests.services import PrivatePostgres, PrivateRedis

BODY = {"model": "mock-gpt-model", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 2}
TOKENS = 10  # what BODY costs: 8 prompt + 2 completion tokens, exactly its reservation


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
    started = time.monotonic()
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
    polled_for = time.monotonic() - started
    assert len(checks) <= 1 + int(polled_for)  # one check a second, however slow this machine is

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


# ---- through the real server ----------------------------------------------------------------------


def post(url: str, secret: str) -> dict[str, Any]:
    """One chat completion on a new connection (so the workers share them): what came back, how fast."""
    started = time.perf_counter()
    r = httpx.post(url + "/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {secret}"}, timeout=30)
    return {
        "key": secret,
        "status": r.status_code,
        "code": r.json()["error"]["code"] if r.status_code >= 400 else None,
        "retry_after": r.headers.get("retry-after"),
        "tokens": r.json()["usage"]["total_tokens"] if r.status_code == 200 else 0,
        "worker": r.headers.get("x-gateway-worker"),
        "seconds": time.perf_counter() - started,
    }


def traffic(url: str, secrets: list[str], seconds: float, clients: int = 6) -> list[dict[str, Any]]:
    """`clients` callers cycling through `secrets` for `seconds`."""
    deadline = time.monotonic() + seconds

    def caller(offset: int) -> list[dict[str, Any]]:
        out, i = [], offset
        while time.monotonic() < deadline:
            out.append(post(url, secrets[i % len(secrets)]))
            i += 1
        return out

    with ThreadPoolExecutor(clients) as pool:
        return [answer for answers in pool.map(caller, range(clients)) for answer in answers]


def burst(url: str, secret: str, n: int) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: post(url, secret), range(n)))


def only_new_workers(url: str, secret: str, old: set[Any]) -> bool:
    """Whether four requests in a row are served by workers not in `old`. While gunicorn swaps the
    workers, a connection an old worker accepted just as it stopped is closed unanswered (uvicorn's
    shutdown closes connections with no request read yet): that is "not yet", not an answer."""
    try:
        return all(post(url, secret)["worker"] not in old for _ in range(4))
    except httpx.TransportError:
        return False


def wait_for(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def logged(key: Any, rows: int) -> None:
    """Wait until the gateway's workers wrote `rows` log rows for `key`."""
    wait_for(lambda: RequestLog.objects.filter(api_key=key).count() >= rows, 20)


def readyz(url: str) -> httpx.Response:
    return httpx.get(url + "/readyz", timeout=10)


def percentile(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[int(p) - 1] if len(values) > 1 else values[0]


RETRY = 1.0  # GATEWAY_DEPENDENCY_RETRY_SECONDS of the fault tests' gateways
RPM = 12
BUDGET = 400


def test_a_redis_outage_under_traffic_is_not_an_outage(
    transactional_db: Any, django_user_model: Any, tmp_path: Path
) -> None:
    user = django_user_model.objects.create_user("redis-outage")
    _, free = create_api_key(user, "no limits")
    _, rpm = create_api_key(user, "rpm", rpm_limit=RPM)
    budget_key, budget = create_api_key(user, "budget", token_budget=BUDGET, budget_period="total")
    output = tmp_path / "gateway.log"
    with PrivateRedis() as redis_server:
        env = {
            "REDIS_URL": redis_server.url,
            "GATEWAY_KEY_CACHE_SECONDS": "1",  # lookups leave the process during the outage
            "GATEWAY_DEPENDENCY_RETRY_SECONDS": str(RETRY),
            "GATEWAY_DEBUG_HEADERS": "true",
            "GUNICORN_GRACEFUL_TIMEOUT": "5",
        }
        with GatewayProcess("gunicorn", workers=2, env=env, output=output) as gw:
            before = [post(gw.url, secret) for secret in (free, rpm, budget) * 3]
            assert {a["status"] for a in before} == {200}
            assert [a["tokens"] for a in before] == [TOKENS] * 9
            assert readyz(gw.url).status_code == 200

            # The same mix with Redis up, on keys of their own, to compare latencies with.
            _, rpm_2 = create_api_key(user, "rpm 2", rpm_limit=RPM)
            _, budget_2 = create_api_key(user, "budget 2", token_budget=BUDGET, budget_period="total")
            healthy = traffic(gw.url, [free, free, rpm_2, budget_2], seconds=3)
            redis_server.stop()
            started = time.monotonic()
            during = traffic(gw.url, [free, free, rpm, budget], seconds=5)
            down = readyz(gw.url)

            redis_server.start()  # on the same port, empty
            time.sleep(RETRY + 0.5)
            back_at = time.monotonic() - started
            rpm_again = burst(gw.url, rpm, RPM + 8)
            time.sleep(1.0)  # each worker rebuilds the budget counters it missed
            logged(budget_key, sum(a["key"] == budget for a in before + healthy + during))
            after = []
            for _ in range(40):
                after.append(post(gw.url, budget))
                if after[-1]["status"] == 429:
                    break
            assert readyz(gw.url).status_code == 200

            logged(budget_key, sum(a["key"] == budget for a in before + healthy + during + after))
            time.sleep(0.3)  # the last settlement
            counter = redis.Redis.from_url(redis_server.url).get(
                f"{gw.env['GATEWAY_REDIS_PREFIX']}:lim:key:{budget_key.pk}:budget:total:tokens"
            )

    everything = before + healthy + during + rpm_again + after
    # Not one 5xx: with the database up, a Redis outage needs none.
    assert [a for a in everything if a["status"] >= 500] == []
    assert {a["status"] for a in during if a["key"] == free} == {200}
    assert {(a["status"], a["code"]) for a in during if a["key"] == rpm} <= {(200, None), (429, "rate_limit_exceeded")}
    served_rpm = sum(a["status"] == 200 for a in during if a["key"] == rpm)
    assert 1 <= served_rpm <= RPM + 2  # each worker half of the limit (plus the refill in 5 s)
    assert {(a["status"], a["code"]) for a in during if a["key"] == budget} <= {
        (200, None),
        (429, "insufficient_quota"),
    }
    assert sum(a["status"] == 200 for a in during if a["key"] == budget) >= 5

    # Redis is back: the rate limit holds again, and the budget counts what the outage spent.
    assert RPM <= sum(a["status"] == 200 for a in rpm_again) <= RPM + 1
    assert after[-1]["code"] == "insufficient_quota"
    spent = sum(row.total_tokens for row in RequestLog.objects.filter(api_key=budget_key, status_code=200))
    assert spent <= BUDGET and BUDGET - spent < TOKENS
    assert int(counter) == spent

    assert down.status_code == 503 and down.json()["failing"] == ["redis"]
    log = output.read_text()
    assert "unhandled error" not in log and "Traceback" not in log
    assert log.count("Redis is unreachable") <= 2  # once per worker, not once per request

    def figures(answers: list[dict[str, Any]]) -> dict[str, Any]:
        latencies = [a["seconds"] for a in answers]
        return {
            "requests": len(answers),
            "5xx": sum(a["status"] >= 500 for a in answers),
            "p50_ms": round(percentile(latencies, 50) * 1000, 1),
            "p99_ms": round(percentile(latencies, 99) * 1000, 1),
            "max_ms": round(max(latencies) * 1000, 1),
        }

    print("Redis up:", figures(healthy), "Redis down:", figures(during), f"Redis back after {back_at:.1f}s")
    assert figures(during)["max_ms"] < 3000


def manage(database_url: str, *args: str) -> str:
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": ""}
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


CREATE_KEYS = """
from django.contrib.auth import get_user_model
from completions.keys import create_api_key
user = get_user_model().objects.create_user("cold-start")
print(create_api_key(user, "used before the outage")[1])
print(create_api_key(user, "never used")[1])
"""


def test_cold_start_with_the_database_down(tmp_path: Path) -> None:
    pg = PrivatePostgres().start()
    try:
        manage(pg.url, "migrate", "--noinput", "-v0")
        warm, cold = [
            line for line in manage(pg.url, "shell", "-c", CREATE_KEYS).split() if line.startswith(KEY_PREFIX)
        ]
        pg.stop()
        with PrivateRedis() as redis_server:
            env = {
                "DATABASE_URL": pg.url,
                "REDIS_URL": redis_server.url,
                "GATEWAY_KEY_CACHE_SECONDS": "1",
                "GATEWAY_DEPENDENCY_RETRY_SECONDS": str(RETRY),
                "GATEWAY_DEBUG_HEADERS": "true",
                "GUNICORN_GRACEFUL_TIMEOUT": "5",
            }
            with GatewayProcess("gunicorn", workers=2, env=env, output=tmp_path / "gateway.log") as gw:
                # Nothing cached anywhere and no database: a clean 503 with retry-after, never a 500.
                refused = [post(gw.url, secret) for secret in (warm, cold, KEY_PREFIX + "bogus") * 3]
                assert {(a["status"], a["code"]) for a in refused} == {(503, "service_unavailable")}
                assert all(int(a["retry_after"]) >= 1 for a in refused)
                models = httpx.get(gw.url + "/v1/models", headers={"Authorization": f"Bearer {warm}"})
                assert models.status_code == 503 and set(models.json()) == {"error"}
                down = readyz(gw.url)
                assert down.status_code == 503 and "database" in down.json()["failing"]
                assert httpx.get(gw.url + "/healthz").status_code == 200

                # The database comes back: the key is used and cached (in each worker and in Redis).
                pg.start()
                wait_for(lambda: readyz(gw.url).status_code == 200, 15)
                time.sleep(RETRY)  # the worker that wasn't asked by /readyz probes again by then
                served = [post(gw.url, warm) for _ in range(10)]
                assert {a["status"] for a in served} == {200}

                # It goes down again: the warm key keeps working past its cache periods; the other doesn't.
                pg.stop()
                still = []
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline:
                    still.append(post(gw.url, warm))
                    time.sleep(0.05)
                assert {a["status"] for a in still} == {200}
                assert post(gw.url, cold)["status"] == 503

                # Workers restarted during the outage start cold: the key and the routes come from Redis.
                old = {a["worker"] for a in served + still}
                assert gw.proc is not None
                gw.proc.send_signal(signal.SIGHUP)
                wait_for(lambda: only_new_workers(gw.url, warm, old), 20)
                restarted = [post(gw.url, warm) for _ in range(6)]
                assert {a["status"] for a in restarted} == {200}
                assert not {a["worker"] for a in restarted} & old
                assert post(gw.url, cold)["status"] == 503
                assert readyz(gw.url).json()["failing"] == ["database"]
                pg.start()  # so the workers write their log backlog and stop promptly
                wait_for(lambda: readyz(gw.url).status_code == 200, 15)
        log = (tmp_path / "gateway.log").read_text()
        assert "unhandled error" not in log
    finally:
        pg.remove()
