"""An asyncio stream client for the benchmark: time to first token under load, and many open streams.

`ttft()` keeps `concurrency` streams going for `duration` seconds (each task opens a stream, notes
when its first body bytes arrive, reads it to the end, and starts the next); `hold()` opens `n`
streams at once and keeps them open to their end, calling `during()` while they are all open.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp


@dataclass
class StreamStats:
    ttft_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_seen: int = 0  # streams that got their first bytes so far
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what[:200])


async def _one(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], stats: StreamStats
) -> None:
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                stats.error(f"HTTP {response.status}: {(await response.read())[:200]!r}")
                return
            first = await response.content.readany()
            ttft = time.perf_counter() - started
            stats.first_seen += 1
            tail = b""
            async for data in response.content.iter_any():
                tail = (tail + data)[-64:]
            if b"[DONE]" not in (first + tail)[-64:] or b'"error"' in tail:
                stats.error(f"stream did not end with [DONE]: {tail!r}")
                return
        stats.ttft_ms.append(ttft * 1000)
        stats.total_ms.append((time.perf_counter() - started) * 1000)
    except (TimeoutError, aiohttp.ClientError) as exc:
        stats.error(f"{type(exc).__name__}: {exc}")


def _session(limit: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ttl_dns_cache=None),
        timeout=aiohttp.ClientTimeout(total=120),
        auto_decompress=False,
    )


async def ttft(url: str, body: bytes, headers: dict[str, str], concurrency: int, duration: float) -> StreamStats:
    stats = StreamStats()
    deadline = time.monotonic() + duration

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            await _one(session, url, body, headers, stats)

    async with _session(concurrency) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return stats


async def hold(
    url: str, body: bytes, headers: dict[str, str], n: int, during: Callable[[], Awaitable[None]]
) -> StreamStats:
    """Open `n` streams at once; `during()` runs once every one of them has its first bytes."""
    stats = StreamStats()
    async with _session(0) as session:
        tasks = [asyncio.ensure_future(_one(session, url, body, headers, stats)) for _ in range(n)]
        deadline = time.monotonic() + 30  # until all have started answering (or failed), then sample
        while time.monotonic() < deadline and stats.first_seen + stats.errors < n:
            await asyncio.sleep(0.1)
        await during()
        await asyncio.gather(*tasks)
    return stats
