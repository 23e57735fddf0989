"""The request log survives its database going down and its workers being stopped or killed.

The gateway runs under gunicorn with `gunicorn.conf.py`, as deployed, on a private
PostgreSQL that the test stops and starts (never the machine's own). Requests are
plain HTTP, each with its own x-request-id, so every answer can be found in the log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from tests.processes import ROOT, GatewayProcess
from tests.services import PrivatePostgres

pytestmark = pytest.mark.slow

BODY = {"model": "mock-gpt-model", "messages": [{"role": "user", "content": "hello there"}]}


def manage(url: str, *args: str) -> str:
    env = {**os.environ, "DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute(sql).fetchall()


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def query_when_up(pg: PrivatePostgres, sql: str) -> list[tuple[Any, ...]]:
    """Start the database (if stopped) and query it."""
    pg.start()
    return query(pg.url, sql)


def log_count(url: str) -> int:
    return query(url, "SELECT count(*) FROM completions_requestlog")[0][0]


def assert_rollups_equal_the_log(url: str) -> None:
    log = query(
        url,
        "SELECT COALESCE(api_key_id, 0), model, count(*), sum(total_tokens), sum(cost * 1000000000)::bigint "
        "FROM completions_requestlog GROUP BY 1, 2 ORDER BY 1, 2",
    )
    usage = query(
        url,
        "SELECT key_id, model, sum(requests), sum(total_tokens), sum(cost_nanos) "
        "FROM completions_usagedaily GROUP BY 1, 2 ORDER BY 1, 2",
    )
    assert usage == log
    ((histogram,),) = query(url, "SELECT sum(count) FROM completions_latencydaily")
    assert histogram == sum(row[2] for row in log)


def spooled_ids(spool: Path) -> set[str]:
    """The request ids in the spool files (a file also holds rows written before it was left)."""
    lines = [line for f in spool.glob("log-*.jsonl") for line in f.read_bytes().splitlines()]
    return {orjson.loads(line)["request_id"] for line in lines}


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[PrivatePostgres, str]]:
    """A private PostgreSQL, migrated, with one API key (its secret)."""
    with PrivatePostgres() as pg:
        manage(pg.url, "migrate", "--noinput", "-v0")
        secret = manage(pg.url, "create_api_key", "--user", "durable", "--name", "e2e", "--create-user")
        yield pg, secret


def gateway_env(pg: PrivatePostgres, spool: Path, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": pg.url,
        "GATEWAY_LOG_SPOOL_DIR": str(spool),
        "GATEWAY_DEBUG_HEADERS": "true",
        # Keys are trusted in process while the database is down (the log is the subject here).
        "GATEWAY_KEY_CACHE_SECONDS": "120",
        **extra,
    }


def chat(url: str, secret: str, request_id: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}", "x-request-id": request_id, "Connection": "close"}
    return httpx.post(url + "/v1/chat/completions", json=BODY, headers=headers, timeout=15)


def test_sigterm_with_the_database_down_loses_no_row(database: tuple[PrivatePostgres, str], tmp_path: Path) -> None:
    pg, secret = database
    spool = tmp_path / "spool"
    env = gateway_env(pg, spool)
    n, m = 120, 100
    before = [f"before-{i}" for i in range(n)]
    during = [f"during-{i}" for i in range(m)]
    with GatewayProcess("gunicorn", workers=2, env=env) as gateway, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda rid: chat(gateway.url, secret, rid), before))
        assert {a.status_code for a in answers} == {200}
        # Both workers must know the key before the database goes (each answers some of `during`).
        assert len({a.headers["x-gateway-worker"] for a in answers}) == 2, "one worker served everything"
        assert wait_until(lambda: log_count(pg.url) == n, 20)

        pg.stop()
        answers = list(pool.map(lambda rid: chat(gateway.url, secret, rid), during))
        assert {a.status_code for a in answers} == {200}  # the log is written off the request path
        assert len({a.headers["x-gateway-worker"] for a in answers}) == 2

        assert gateway.proc is not None
        stopping = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)  # right away: what is still queued must reach the spool
        gateway.proc.wait(40)
        shutdown_seconds = time.monotonic() - stopping
    written = {r for (r,) in query_when_up(pg, "SELECT request_id FROM completions_requestlog")}
    assert written == set(before)
    unwritten = spooled_ids(spool) - written
    assert unwritten == set(during), f"{m} rows were not written; {len(unwritten)} of them are in the spool"
    assert shutdown_seconds < 15  # nobody waits for a database that is down

    with GatewayProcess("gunicorn", workers=2, env=env):
        assert wait_until(lambda: log_count(pg.url) >= n + m, 30), log_count(pg.url)
        assert wait_until(lambda: not list(spool.glob("log-*")), 10), list(spool.iterdir())
    ((rows, uids, ids),) = query(
        pg.url, "SELECT count(*), count(DISTINCT uid), count(DISTINCT request_id) FROM completions_requestlog"
    )
    assert rows == uids == ids == n + m  # none lost, none twice
    assert {r for (r,) in query(pg.url, "SELECT request_id FROM completions_requestlog")} == {*before, *during}
    assert_rollups_equal_the_log(pg.url)
    print(
        f"\nSIGTERM with the database down: {n} rows written before the outage, {m} answered during it, "
        f"{len(unwritten)} of them in the spool at exit (shutdown {shutdown_seconds:.1f} s), "
        f"{rows} in the log after the restart"
    )


FLUSH_SECONDS = 0.5  # the spool interval of this test: long enough for its window to show
SLACK_SECONDS = 1.0  # scheduling on a busy machine: the journal thread may wait for a core and the GIL


def test_sigkill_loses_only_what_the_last_flush_interval_answered(
    database: tuple[PrivatePostgres, str], tmp_path: Path
) -> None:
    """A worker killed with SIGKILL loses the rows of requests answered in the last flush interval
    (not yet appended to its spool file) and leaves no row for requests in flight; every earlier
    answer is written, by the worker gunicorn starts in its place, exactly once."""
    pg, secret = database
    spool = tmp_path / "spool"
    env = gateway_env(pg, spool, GATEWAY_LOG_FLUSH_SECONDS=str(FLUSH_SECONDS))
    answered: dict[str, float] = {}  # request id -> when its answer arrived
    in_flight: set[str] = set()
    stop = threading.Event()
    with GatewayProcess("gunicorn", workers=1, env=env) as gateway:
        warm = chat(gateway.url, secret, "warm-up")
        assert warm.status_code == 200
        victim = int(warm.headers["x-gateway-worker"])
        assert wait_until(lambda: log_count(pg.url) == 1, 20)
        pg.stop()  # nothing reaches the database: every row must come back from the spool

        def load(client: int) -> None:
            with httpx.Client(timeout=15) as http:
                for i in range(10_000):
                    if stop.is_set():
                        return
                    rid = f"load-{client}-{i}"
                    in_flight.add(rid)
                    try:
                        response = http.post(
                            gateway.url + "/v1/chat/completions",
                            json=BODY,
                            headers={"Authorization": f"Bearer {secret}", "x-request-id": rid},
                        )
                    except httpx.HTTPError:
                        return  # the worker died under this request
                    if response.status_code == 200:
                        answered[rid] = time.monotonic()
                    in_flight.discard(rid)

        clients = [threading.Thread(target=load, args=(c,)) for c in range(4)]
        for c in clients:
            c.start()
        time.sleep(3.0)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        stop.set()
        for c in clients:
            c.join(20)
        pg.start()
        # gunicorn starts another worker; it finds the dead one's file (its lock is gone) and writes it.
        expected = {rid for rid, at in answered.items() if at < killed_at - FLUSH_SECONDS - SLACK_SECONDS}
        assert wait_until(lambda: not list(spool.glob("log-*")), 40), list(spool.iterdir())
        time.sleep(0.5)
        logged = [r for (r,) in query(pg.url, "SELECT request_id FROM completions_requestlog")]
        after = chat(gateway.url, secret, "after")
        assert after.status_code == 200 and int(after.headers["x-gateway-worker"]) != victim  # another worker
    assert len(logged) == len(set(logged))  # no row twice
    logged_set = set(logged) - {"warm-up"}
    lost = set(answered) - logged_set
    assert expected <= logged_set, f"{len(expected - logged_set)} rows answered long before the kill were lost"
    assert all(answered[rid] >= killed_at - FLUSH_SECONDS - SLACK_SECONDS for rid in lost)
    assert logged_set <= set(answered) | in_flight
    assert len(expected) > 100  # the load ran long enough for the check to mean something
    newest_lost = max((killed_at - answered[rid] for rid in lost), default=0.0)
    print(
        f"\nSIGKILL with the database down: {len(answered)} answered, {len(logged_set)} written after the "
        f"restart, {len(lost)} lost (all answered in the last {newest_lost:.2f} s before the kill; "
        f"flush interval {FLUSH_SECONDS} s), {len(in_flight)} in flight ({len(in_flight & logged_set)} with a row)"
    )
