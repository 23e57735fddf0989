"""OpenAI-compatible, the provider's I/O: its client's options, and the provider driven directly against
the fake server (no gateway)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest

from completions.errors import GatewayError
from completions.protocol import EmbeddingRequest, validate
from completions.providers.openai_compat import OpenAICompatProvider
from tests.conftest import free_port
from tests.fakes.base import Gate, Pause, Reply
from tests.fakes.openai_server import (
    DONE,
    EMBEDDING_USAGE,
    MODEL,
    USAGE,
    FakeOpenAI,
    chunk,
    completion,
    error,
    text_events,
    usage_chunk,
    vector,
)
from tests.openapi import assert_valid
from tests.providers.openai_compat.helpers import KEY, KEY_ENV, QUESTION, chat_request, drain, route_for, run


def test_base_url_and_timeouts() -> None:
    provider = OpenAICompatProvider(route_for(first_byte_timeout=20, idle_timeout=45, connect_timeout=3))
    assert provider.base_url == "https://api.openai.com/v1"
    assert provider._chat_url == "https://api.openai.com/v1/chat/completions"

    async def opened() -> aiohttp.ClientSession:
        client = provider._session()
        assert (client.timeout.sock_connect, client.timeout.sock_read, client.timeout.total) == (3, 50, None)
        assert isinstance(client.cookie_jar, aiohttp.DummyCookieJar)  # no upstream cookie reaches another request
        assert provider._session() is client  # one pooled session per route
        return client

    # A session belongs to one event loop: another loop gets its own, and closing the provider there
    # leaves the first one alone (it is closed in its own loop).
    loop = asyncio.new_event_loop()
    try:
        first = loop.run_until_complete(opened())

        async def elsewhere() -> None:
            second = await opened()
            assert second is not first
            await provider.aclose()
            assert second.closed and not first.closed

        asyncio.run(elsewhere())
        loop.run_until_complete(first.close())
        third = loop.run_until_complete(opened())
        asyncio.run(provider.aclose())  # from a loop it does not belong to: left open, no error
        assert not third.closed and provider._client is None
        loop.run_until_complete(third.close())
    finally:
        loop.close()
    ollama = OpenAICompatProvider(route_for(base_url="http://localhost:11434/v1/"))
    assert ollama._embeddings_url == "http://localhost:11434/v1/embeddings"


def test_complete_sends_the_body_and_returns_the_upstream_json(fake: FakeOpenAI) -> None:
    route = route_for(fake, options={"headers": {"OpenAI-Organization": "org-1"}})
    result = run(lambda p: p.complete(p.prepare(chat_request(temperature=0.2, seed=3))), route)
    assert result == completion()
    (sent,) = fake.requests
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.json == {"model": MODEL, "messages": QUESTION, "temperature": 0.2, "seed": 3}
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["openai-organization"] == "org-1"


def test_no_key_env_sends_no_authorization(fake: FakeOpenAI) -> None:
    run(lambda p: p.complete(p.prepare(chat_request())), route_for(fake, api_key_env=""))
    assert "authorization" not in fake.requests[0].headers


def test_custom_auth_header(fake: FakeOpenAI) -> None:
    run(lambda p: p.complete(p.prepare(chat_request())), route_for(fake, options={"auth_header": "api-key"}))
    headers = fake.requests[0].headers
    assert headers["api-key"] == KEY and "authorization" not in headers


def test_key_rotation_is_picked_up(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    async def twice(p: OpenAICompatProvider) -> None:
        await p.complete(p.prepare(chat_request()))
        monkeypatch.setenv(KEY_ENV, "sk-rotated-key")
        await p.complete(p.prepare(chat_request()))

    run(twice, route_for(fake))
    assert [r.headers["authorization"] for r in fake.requests] == [f"Bearer {KEY}", "Bearer sk-rotated-key"]


def test_one_pooled_connection_serves_sequential_requests(fake: FakeOpenAI) -> None:
    # The second stream's body ends a moment after its [DONE]: the provider waits for that end (a
    # connection whose body was not read to its end would be closed instead of reused).
    fake.script(Reply(json=completion()), Reply(events=[*text_events(usage=USAGE), Pause(0.1)]))

    async def four(p: OpenAICompatProvider) -> None:
        await p.complete(p.prepare(chat_request()))
        client = p._client
        await drain(
            p.stream(p.prepare(chat_request(stream=True)))
        )  # read to [DONE]: the connection goes back to the pool
        await drain(p.stream(p.prepare(chat_request(stream=True))))
        await p.complete(p.prepare(chat_request()))
        assert p._client is client

    run(four, route_for(fake))
    assert len(fake.peers) == 4 and len(set(fake.peers)) == 1


def test_redirects_are_not_followed_with_the_credential(fake: FakeOpenAI) -> None:
    fake.script(Reply(status=307, body=b"", headers={"location": fake.url + "/v1/elsewhere"}))
    with pytest.raises(GatewayError) as exc:
        run(lambda p: p.complete(p.prepare(chat_request())), route_for(fake))
    assert exc.value.status >= 400
    assert [r.path for r in fake.requests] == ["/v1/chat/completions"]  # only one request reached it


def test_upstream_cookies_never_reach_the_next_request(fake: FakeOpenAI) -> None:
    fake.script(Reply(json=completion(), headers={"set-cookie": "session=tenant-a; Path=/"}), Reply(json=completion()))

    async def twice(p: OpenAICompatProvider) -> None:
        await p.complete(p.prepare(chat_request()))
        await p.complete(p.prepare(chat_request()))

    # By host name: a cookie jar would keep no cookie of an IP address anyway.
    run(twice, route_for(base_url=fake.url.replace("127.0.0.1", "localhost") + "/v1"))
    assert len(fake.requests) == 2 and "cookie" not in fake.requests[1].headers


def test_complete_without_usage_is_relayed_without_usage(fake: FakeOpenAI) -> None:
    fake.script(Reply(json=completion("four words right here", usage=None)))
    result = run(lambda p: p.complete(p.prepare(chat_request())), route_for(fake))
    assert "usage" not in result  # the gateway counts it (see test_e2e_missing_usage_is_counted_and_marked)
    assert_valid(result, "CreateChatCompletionResponse")


def test_stream_relays_chunks_and_forces_usage(fake: FakeOpenAI) -> None:
    chunks = run(lambda p: drain(p.stream(p.prepare(chat_request(stream=True)))), route_for(fake))
    assert chunks == [e for e in text_events(usage=USAGE) if e != DONE]
    assert fake.requests[0].json["stream_options"] == {"include_usage": True}


def test_stream_first_chunk_arrives_before_the_rest_exists(fake: FakeOpenAI) -> None:
    gate = Gate()
    events = text_events(usage=USAGE)
    fake.script(Reply(events=[events[0], gate, *events[1:]]))

    async def first_then_rest(p: OpenAICompatProvider) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        stream = p.stream(p.prepare(chat_request(stream=True)))
        first = await asyncio.wait_for(anext(stream), 5)
        gate.open()
        return first, await drain(stream)

    first, rest = run(first_then_rest, route_for(fake))
    assert first == events[0] and len(rest) == len(events) - 2


def test_stream_framing_split_across_network_reads(fake: FakeOpenAI) -> None:
    one = orjson.dumps(chunk({"role": "assistant", "content": "Hi"}))
    two = orjson.dumps(chunk({"content": " there"}, finish_reason="stop"))
    raw_usage = orjson.dumps(usage_chunk())
    pieces: list[Any] = [
        b": OPENROUTER PROCESSING\r\n\r\n",
        b"data: " + one[:10],
        Pause(0.05),
        one[10:] + b"\r",
        Pause(0.05),
        b"\n\r\n",
        b"event: message\r\ndata: " + two + b"\r\n\r\n",
        b": ping\n\n",
        b"data: " + raw_usage[:5],
        Pause(0.05),
        raw_usage[5:] + b"\n\ndata: [DONE]\n\n",
    ]
    fake.script(Reply(events=pieces))
    chunks = run(lambda p: drain(p.stream(p.prepare(chat_request(stream=True)))), route_for(fake))
    assert [c["choices"][0]["delta"].get("content") for c in chunks[:-1]] == ["Hi", " there"]
    assert chunks[-1]["usage"] == USAGE


def test_closing_the_stream_early_closes_the_upstream(fake: FakeOpenAI) -> None:
    gate = Gate()
    events = text_events()
    fake.script(Reply(events=[events[0], gate, *events[1:]]))

    async def first_then_close(p: OpenAICompatProvider) -> int:
        stream = p.stream(p.prepare(chat_request(stream=True)))
        await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]
        # Closed by then, not later by a garbage-collection finalizer (aiohttp's pool is private API):
        # neither kept for reuse nor still held.
        connector = p._client.connector  # type: ignore[union-attr]
        assert not connector._conns and not connector._acquired  # type: ignore[union-attr]
        # Seen while the provider (and its pool) is still open: the stream itself hung up.
        deadline = time.monotonic() + 10
        while not fake.disconnects and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return fake.disconnects

    try:
        assert run(first_then_close, route_for(fake)) == 1
    finally:
        gate.open()


def test_stream_answered_with_json_is_turned_into_chunks(fake: FakeOpenAI) -> None:
    fake.script(Reply(json=completion("whole answer")))
    chunks = run(lambda p: drain(p.stream(p.prepare(chat_request(stream=True)))), route_for(fake))
    assert chunks[0]["choices"][0]["delta"]["content"] == "whole answer"
    assert chunks[-1]["usage"] == USAGE


def test_embed_asks_for_floats_and_returns_the_upstream_json(fake: FakeOpenAI) -> None:
    request = validate(
        EmbeddingRequest, {"model": "oai-embed", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 3}
    )
    result = run(lambda p: p.embed(request), route_for(fake))
    assert fake.requests[0].path == "/v1/embeddings"
    assert fake.requests[0].json == {"model": MODEL, "input": ["a", "b"], "encoding_format": "float", "dimensions": 3}
    assert [d["embedding"] for d in result["data"]] == [vector(0), vector(1)]
    assert result["usage"] == EMBEDDING_USAGE
    assert_valid(result, "CreateEmbeddingResponse")


def test_embed_errors_and_missing_usage(fake: FakeOpenAI) -> None:
    request = validate(EmbeddingRequest, {"model": "oai-embed", "input": "three little words"})
    fake.script(
        Reply(
            json={"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}], "model": MODEL}
        )
    )
    assert "usage" not in run(lambda p: p.embed(request), route_for(fake))  # the gateway counts it
    fake.script(Reply(status=400, json=error("This model does not support embeddings.", param="model")))
    with pytest.raises(GatewayError) as exc:
        run(lambda p: p.embed(request), route_for(fake))
    assert (exc.value.status, exc.value.param) == (400, "model")


def test_the_environments_proxy_is_used(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    # The fake stands in for the proxy: a request for a port nothing listens on reaches it all the same.
    upstream = f"localhost:{free_port()}"
    route = route_for(base_url=f"http://{upstream}/v1")
    monkeypatch.setenv("HTTP_PROXY", fake.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert run(lambda p: p.complete(p.prepare(chat_request())), route) == completion()
    (sent,) = fake.requests
    assert (sent.path, sent.headers["host"], sent.headers["authorization"]) == (
        "/v1/chat/completions",
        upstream,
        f"Bearer {KEY}",
    )
    monkeypatch.setenv("NO_PROXY", "localhost")  # read when the route's provider is made: straight there
    with pytest.raises(GatewayError) as exc:
        run(lambda p: p.complete(p.prepare(chat_request())), route)
    assert exc.value.code == "upstream_unreachable" and len(fake.requests) == 1
