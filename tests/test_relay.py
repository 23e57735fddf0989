"""The stream relay on its own, without a network: the bytes it sends and how the exchange ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from completions.app import Gateway
from completions.auth import KeyCache
from completions.errors import UpstreamError
from completions.exchange import Exchange
from completions.failover import CircuitBreakers
from completions.limits import LocalLimiter
from completions.protocol import ChatCompletionRequest, ChunkFactory, usage
from completions.providers import Route
from completions.recorder import RequestRecord
from completions.relay import Relay
from completions.routing import Router


class Log:
    """Collects submitted records instead of writing them."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    def submit(self, record: RequestRecord) -> None:
        self.records.append(record)


def exchange() -> tuple[Exchange, Log]:
    log = Log()
    state = Gateway(Router(), CircuitBreakers(), log, LocalLimiter(), KeyCache())  # type: ignore[arg-type]
    return Exchange(state, "req-1", "chat.completions"), log


def request(**extra: Any) -> ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "one two three"}], "stream": True, **extra}
    return ChatCompletionRequest.model_validate(body)


async def upstream(*steps: Any, closed: list[bool] | None = None, pause: float = 0) -> AsyncIterator[dict[str, Any]]:
    try:
        for step in steps:
            if pause:
                await asyncio.sleep(pause)
            if isinstance(step, BaseException):
                raise step
            yield step
    finally:
        if closed is not None:
            closed.append(True)


def events(raw: list[bytes]) -> list[Any]:
    """The SSE events sent (one send may carry several)."""
    out: list[Any] = []
    for part in raw:
        assert part.endswith(b"\n\n")
        for event in part[:-2].split(b"\n\n"):
            assert event.startswith(b"data: ")
            data = event[6:]
            out.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return out


CHUNKS = ChunkFactory("m", "chatcmpl-1", 1)
TEXT = [CHUNKS.delta(0, {"role": "assistant", "content": "one"}), CHUNKS.delta(0, {"content": " two"})]
FINISH = CHUNKS.delta(0, {}, finish_reason="stop")
USAGE = CHUNKS.usage(usage(5, 2))


async def relay_all(relay: Relay) -> list[bytes]:
    return [part async for part in relay]


def run(req: ChatCompletionRequest, *steps: Any, idle: float = 30.0) -> tuple[list[Any], RequestRecord, Log]:
    async def go() -> tuple[list[bytes], Exchange, Log]:
        ex, log = exchange()
        stream = upstream(*steps[1:])
        relay = Relay(ex, req, Route("m", "mock", "m", idle_timeout=idle), steps[0], stream)
        ex.respond_stream(relay)
        try:
            return await relay_all(relay), ex, log
        finally:
            await relay.aclose()

    raw, ex, log = asyncio.run(go())
    return events(raw), ex.record, log


def test_chunks_are_relayed_in_order_and_the_usage_chunk_only_when_asked() -> None:
    sent, record, log = run(request(), *TEXT, FINISH, USAGE)
    assert [e["choices"][0]["delta"].get("content") for e in sent[:-1]] == ["one", " two", None]
    assert sent[-1] == "[DONE]"
    assert (record.prompt_tokens, record.completion_tokens, record.finish_reason) == (5, 2, "stop")
    assert log.records == [record] and not record.usage_estimated

    sent, _, _ = run(request(stream_options={"include_usage": True}), *TEXT, FINISH, USAGE)
    assert sent[-2]["usage"]["total_tokens"] == 7 and sent[-2]["choices"] == []
    assert all(e["usage"] is None for e in sent[:-2])


def test_a_stream_without_usage_is_counted_here_and_marked() -> None:
    sent, record, _ = run(request(stream_options={"include_usage": True}), *TEXT, FINISH)
    assert record.usage_estimated and record.completion_tokens == 2 and record.prompt_tokens > 0
    assert sent[-2]["usage"]["completion_tokens"] == 2  # the client still gets a usage chunk


def test_an_upstream_error_mid_stream_ends_it_with_an_error_event() -> None:
    sent, record, log = run(request(), TEXT[0], UpstreamError("cut", status=502))
    assert sent[1]["error"]["message"] == "cut" and sent[2] == "[DONE]"
    assert record.status_code == 502 and record.error_message == "cut"
    assert len(log.records) == 1


def test_an_idle_upstream_ends_the_stream_with_a_timeout_event() -> None:
    async def go() -> tuple[list[bytes], RequestRecord]:
        ex, _ = exchange()
        relay = Relay(ex, request(), Route("m", "mock", "m", idle_timeout=0.05), TEXT[0], upstream(TEXT[1], pause=1))
        ex.respond_stream(relay)
        return await relay_all(relay), ex.record

    raw, record = asyncio.run(go())
    sent = events(raw)
    assert sent[1]["error"]["code"] == "upstream_timeout" and record.status_code == 504


@pytest.mark.parametrize("after", [0, 1])
def test_closing_early_closes_the_upstream_and_the_exchange_once(after: int) -> None:
    async def go() -> tuple[list[bool], Exchange, Log]:
        closed: list[bool] = []
        ex, log = exchange()
        stream = upstream(*TEXT, FINISH, closed=closed)
        first = await anext(stream)  # as chat.py does before the relay takes over
        relay = Relay(ex, request(), Route("m", "mock", "m"), first, stream)
        ex.respond_stream(relay)
        for _ in range(after):
            await anext(relay)
        await relay.aclose()
        await relay.aclose()
        return closed, ex, log

    closed, ex, log = asyncio.run(go())
    assert closed == [True] and ex.closed and len(log.records) == 1
    assert log.records[0].client_disconnected and log.records[0].usage_estimated
