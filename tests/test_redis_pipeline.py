"""The limiter's Redis path: commands of one loop turn in one pipeline, O(1) reservation totals.

Each test runs against a private Redis on its own port (never the machine's own)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aredis

from completions import limits as lim
from completions.caller import Limits, Scope
from completions.circuit import REDIS_ERRORS
from completions.redis_pipeline import AutoPipeline, Script
from tests.services import PrivateRedis

ECHO = Script("redis.call('INCR', KEYS[1]); return {ARGV[1], redis.call('GET', KEYS[1])}")


@pytest.fixture(scope="module")
def server() -> Iterator[PrivateRedis]:
    with PrivateRedis() as private:
        yield private


def connected_clients(url: str) -> int:
    return int(redis.Redis.from_url(url).info("clients")["connected_clients"])


def test_concurrent_calls_share_a_few_connections_and_get_their_own_replies(server: PrivateRedis) -> None:
    async def run() -> tuple[list[Any], int, int]:
        client = aredis.Redis.from_url(server.url, decode_responses=True)
        pipeline = AutoPipeline(client, max_in_flight=2)
        before = connected_clients(server.url)

        async def call(i: int) -> Any:
            return await pipeline.script(ECHO, ["pipe:n"], [f"call-{i}"])

        replies = await asyncio.gather(*(call(i) for i in range(500)))
        during = connected_clients(server.url) - before
        await client.aclose()
        return replies, during, int(await_count(server.url))

    replies, connections, count = asyncio.run(run())
    assert [r[0] for r in replies] == [f"call-{i}" for i in range(500)]  # each caller its own reply
    assert sorted(int(r[1]) for r in replies) == list(range(1, 501))  # every call ran once
    assert count == 500
    assert connections <= 2  # 500 concurrent calls, at most max_in_flight connections


def await_count(url: str) -> str:
    value = redis.Redis.from_url(url, decode_responses=True).get("pipe:n")
    assert value is not None
    return value


def test_calls_made_while_a_pipeline_is_out_go_together_in_the_next(server: PrivateRedis) -> None:
    async def run() -> tuple[int, int, list[Any]]:
        client = aredis.Redis.from_url(server.url, decode_responses=True)
        pipeline = AutoPipeline(client, max_in_flight=1)
        first = asyncio.ensure_future(pipeline.execute("ECHO", "first"))
        await asyncio.sleep(0)  # the first pipeline is out (one command) ...
        rest = [pipeline.execute("ECHO", f"next-{i}") for i in range(300)]  # ... these wait for it
        await first
        at_once = pipeline.sent
        replies = await asyncio.gather(*rest)
        await client.aclose()
        return at_once, pipeline.sent, replies

    at_once, sent, replies = asyncio.run(run())
    assert at_once == 1
    assert sent == 2  # the 300 calls made meanwhile: one pipeline
    assert replies == [f"next-{i}" for i in range(300)]


def test_a_script_redis_lost_is_sent_again(server: PrivateRedis) -> None:
    async def run() -> Any:
        client = aredis.Redis.from_url(server.url, decode_responses=True)
        pipeline = AutoPipeline(client)
        await pipeline.script(ECHO, ["pipe:lost"], ["first"])
        await client.script_flush()
        reply = await pipeline.script(ECHO, ["pipe:lost"], ["after-flush"])
        await client.aclose()
        return reply

    assert asyncio.run(run()) == ["after-flush", "2"]


def test_an_error_reply_fails_only_its_own_command(server: PrivateRedis) -> None:
    async def run() -> list[Any]:
        client = aredis.Redis.from_url(server.url, decode_responses=True)
        pipeline = AutoPipeline(client)
        out = await asyncio.gather(
            pipeline.execute("SET", "pipe:s", "x"),
            pipeline.execute("INCR", "pipe:s"),  # not an integer: an error reply
            pipeline.execute("GET", "pipe:s"),
            return_exceptions=True,
        )
        await client.aclose()
        return out

    ok, error, value = asyncio.run(run())
    assert ok is True and value == "x"
    assert isinstance(error, redis.ResponseError)


def test_an_unreachable_redis_fails_every_queued_command_with_a_redis_error() -> None:
    stopped = PrivateRedis()  # never started: its port refuses connections

    async def run() -> list[Any]:
        client = aredis.Redis.from_url(stopped.url, socket_connect_timeout=0.5)
        pipeline = AutoPipeline(client)
        out = await asyncio.gather(*(pipeline.execute("PING") for _ in range(5)), return_exceptions=True)
        await client.aclose()
        return out

    errors = asyncio.run(run())
    assert len(errors) == 5
    assert all(isinstance(e, REDIS_ERRORS) for e in errors)


# ---- reservation totals ------------------------------------------------------------------------


def amounts(server: PrivateRedis, prefix: str, key_id: int) -> dict[str, str]:
    direct = redis.Redis.from_url(server.url, decode_responses=True)
    found: dict[str, str] = direct.hgetall(f"{prefix}:lim:key:{key_id}:budget:total:held-amounts")
    return found


def test_budget_counts_every_request_in_flight_from_the_kept_totals(server: PrivateRedis) -> None:
    limiter = lim.RedisLimiter(server.url, "totals")
    scope = [Scope("key", 7, Limits(token_budget=10_000, period="total"))]

    async def run() -> tuple[dict[str, str], Any, dict[str, str], dict[str, str]]:
        lim_direct = aredis.Redis.from_url(server.url)
        await lim_direct.set("totals:lim:key:7:budget:total:tokens", 0)
        await lim_direct.set("totals:lim:key:7:budget:total:nanos", 0)
        in_flight = [await limiter.admit(scope, 300, 0) for _ in range(30)]  # 9,000 reserved
        held = amounts(server, "totals", 7)
        try:
            await limiter.admit(scope, 1_500, 0)
            refused: Any = None
        except lim.QuotaExceeded as exc:
            refused = exc
        for admission in in_flight[:10]:
            await limiter.settle(admission, 100, 0)  # 1,000 spent; 20 x 300 still held
        after = amounts(server, "totals", 7)
        for admission in in_flight[10:]:
            await limiter.settle(admission, 100, 0)
        done = amounts(server, "totals", 7)
        await lim_direct.aclose()
        return held, refused, after, done

    held, refused, after, done = asyncio.run(run())
    assert held["sum:t"] == "9000" and len(held) == 2 + 60
    assert isinstance(refused, lim.QuotaExceeded)  # 0 spent + 9,000 held + 1,500 > 10,000
    assert after["sum:t"] == "6000" and len(after) == 2 + 40
    assert done.get("sum:t") in (None, "0") and len(done) <= 2


def test_stale_and_orphaned_reservations_leave_the_totals(server: PrivateRedis) -> None:
    limiter = lim.RedisLimiter(server.url, "stale")
    scope = [Scope("key", 8, Limits(token_budget=1_000, period="total"))]
    direct = redis.Redis.from_url(server.url, decode_responses=True)
    base = "stale:lim:key:8:budget:total"
    direct.set(f"{base}:tokens", 0)
    direct.set(f"{base}:nanos", 0)

    async def run() -> Any:
        crashed = await limiter.admit(scope, 600, 0)  # a worker that died holding 600
        direct.zadd(f"{base}:held", {crashed.token: 1})  # ... taken long ago
        fresh = await limiter.admit(scope, 900, 0)  # fits only once the stale 600 is released
        orphan = await limiter.admit(scope, 50, 0)
        await limiter._forget(set(), [(scope_share(scope), orphan.token)])
        return fresh

    fresh = asyncio.run(run())
    held = direct.hgetall(f"{base}:held-amounts")
    assert held["sum:t"] == "900"
    assert direct.zrange(f"{base}:held", 0, -1) == [fresh.token]


def scope_share(scope: list[Scope]) -> lim.Share:
    return lim.Share(scope[0], lim.period_id(scope[0].limits.period))
