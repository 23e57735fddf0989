"""The OpenAI-compatible provider: pure translation, I/O against a fake server, and end to end through the gateway."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from completions.errors import GatewayError, UpstreamAuthFailed, UpstreamError
from completions.protocol import ChatCompletionRequest, EmbeddingRequest, validate
from completions.providers.base import Route
from completions.providers.openai_compat import (
    ChunkReader,
    OpenAICompatProvider,
    SSEDecoder,
    chat_body,
    completion_to_chunks,
    embedding_body,
    error_from_event,
    error_from_response,
    transport_error,
)
from completions.tokens import count_response
from tests.conftest import free_port, log_rows
from tests.fakes.base import DROP, Gate, Pause, Reply
from tests.fakes.openai_server import (
    DEFAULT_TEXT,
    DONE,
    EMBEDDING_USAGE,
    MODEL,
    USAGE,
    FakeOpenAI,
    chunk,
    completion,
    embeddings,
    error,
    text_events,
    tool_call_events,
    usage_chunk,
    vector,
)
from tests.openapi import assert_valid, without_extensions

QUESTION = [{"role": "user", "content": "Say hello."}]
KEY_ENV = "TEST_OPENAI_KEY"
KEY = "sk-upstream-test"

# Every parameter of CreateChatCompletionRequest, with nested models, aliases and explicit nulls.
FULL_REQUEST: dict[str, Any] = {
    "model": "oai-test",
    "messages": [
        {"role": "system", "content": "Be brief.", "name": "sys"},
        {
            "role": "developer",
            "content": [{"type": "text", "text": "Rules.", "prompt_cache_breakpoint": {"mode": "explicit"}}],
        },
        {
            "role": "user",
            "name": "ann",
            "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    "extra_content": {"google": {"thought_signature": "c2lnbmF0dXJl"}},
                },
                {"id": "call_2", "type": "custom", "custom": {"name": "sql", "input": "SELECT 1"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "1"}]},
        {
            "role": "assistant",
            "content": [{"type": "refusal", "refusal": "no"}],
            "refusal": "no",
            "audio": {"id": "audio_1"},
        },
        {"role": "function", "name": "legacy", "content": None},
        {"role": "user", "content": "And now?"},
    ],
    "metadata": {"team": "search"},
    "temperature": 0.7,
    "top_p": 0.9,
    "n": 2,
    "stream": True,
    "stream_options": {"include_usage": True, "include_obfuscation": False},
    "stop": ["END", "STOP"],
    "max_tokens": 100,
    "max_completion_tokens": 120,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
    "logit_bias": {"50256": -100},
    "logprobs": True,
    "top_logprobs": 3,
    "seed": 7,
    "user": "user-1",
    "safety_identifier": "hashed-user",
    "prompt_cache_key": "pck",
    "prompt_cache_retention": "24h",
    "prompt_cache_options": {"ttl": "1h"},
    "response_format": {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "strict": True,
            "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
        },
    },
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "strict": True,
                "parameters": {"type": "object"},
            },
        },
        {"type": "custom", "custom": {"name": "sql", "format": {"type": "text"}}},
    ],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "parallel_tool_calls": False,
    "functions": [{"name": "legacy", "parameters": {"type": "object"}}],
    "function_call": {"name": "legacy"},
    "service_tier": "flex",
    "modalities": ["text", "audio"],
    "audio": {"voice": "alloy", "format": "mp3"},
    "verbosity": "low",
    "reasoning_effort": "high",
    "web_search_options": {"search_context_size": "low", "user_location": {"type": "approximate"}},
    "store": False,
    "moderation": {"model": "omni-moderation-latest"},
    "prediction": {"type": "content", "content": "draft"},
}


def chat_request(**fields: Any) -> ChatCompletionRequest:
    return validate(ChatCompletionRequest, {"model": "oai-test", "messages": QUESTION, **fields})


def route_for(fake: FakeOpenAI | None = None, **fields: Any) -> Route:
    values: dict[str, Any] = {
        "model_name": "oai-test",
        "provider": "openai",
        "upstream_model": MODEL,
        "base_url": (fake.url + "/v1") if fake else "",
        "api_key_env": KEY_ENV,
    }
    values.update(fields)
    return Route(**values)


def run(make: Callable[[OpenAICompatProvider], Any], route: Route) -> Any:
    """Run `make(provider)` on a fresh provider in a fresh event loop, closing the provider after."""

    async def go() -> Any:
        provider = OpenAICompatProvider(route)
        try:
            return await make(provider)
        finally:
            await provider.aclose()

    return asyncio.run(go())


async def drain(stream: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c async for c in stream]


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.02)


# ---- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def openai_fake() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(openai_fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    openai_fake.reset()
    monkeypatch.setenv(KEY_ENV, KEY)
    yield openai_fake
    openai_fake.reset()


@pytest.fixture
def oai_route(gateway: Any, fake: FakeOpenAI) -> Callable[..., Any]:
    """Creates the `oai-test` route to the fake (no retries unless asked, so scripts are exact)."""
    from completions.models import ModelRoute

    def make(**fields: Any) -> Any:
        values: dict[str, Any] = {
            "model_name": "oai-test",
            "provider": "openai",
            "upstream_model": MODEL,
            "base_url": fake.url + "/v1",
            "api_key_env": KEY_ENV,
            "max_retries": 0,
        }
        values.update(fields)
        return ModelRoute.objects.create(**values)

    return make


# ---- request bodies (pure) ------------------------------------------------------------------


def test_full_request_names_every_parameter() -> None:
    # Keeps the faithfulness test below honest when the request model grows.
    assert set(FULL_REQUEST) == set(ChatCompletionRequest.model_fields)


def test_chat_body_reproduces_the_client_json() -> None:
    request = validate(ChatCompletionRequest, FULL_REQUEST)
    body = chat_body(request, MODEL, stream=True)
    assert body == {**FULL_REQUEST, "model": MODEL}
    assert orjson.loads(orjson.dumps(body)) == body  # JSON-native all the way down
    # Unset defaults stay unset (no `detail: "auto"` invented), aliases and extensions survive.
    assert body["messages"][2]["content"][1]["image_url"] == {"url": "https://example.com/a.png"}
    assert (
        "schema" in body["response_format"]["json_schema"] and "schema_" not in body["response_format"]["json_schema"]
    )
    assert body["messages"][3]["tool_calls"][0]["extra_content"] == {"google": {"thought_signature": "c2lnbmF0dXJl"}}
    assert body["messages"][3]["content"] is None and body["messages"][7]["content"] is None


def test_chat_body_minimal_request_adds_nothing() -> None:
    assert chat_body(chat_request(), MODEL, stream=False) == {"model": MODEL, "messages": QUESTION}


@pytest.mark.parametrize(
    ("client_options", "expected"),
    [
        (None, {"include_usage": True}),
        ({"include_usage": False}, {"include_usage": True}),
        ({"include_obfuscation": True}, {"include_obfuscation": True, "include_usage": True}),
    ],
)
def test_stream_body_forces_include_usage(client_options: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"stream": True}
    if client_options is not None:
        fields["stream_options"] = client_options
    body = chat_body(chat_request(**fields), MODEL, stream=True)
    assert body["stream"] is True and body["stream_options"] == expected


def test_stream_body_can_leave_stream_options_alone() -> None:
    body = chat_body(chat_request(stream=True), MODEL, stream=True, force_usage=False)
    assert "stream_options" not in body


def test_embedding_body_asks_for_floats() -> None:
    request = validate(
        EmbeddingRequest, {"model": "e", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 3, "user": "u"}
    )
    assert embedding_body(request, MODEL) == {
        "model": MODEL,
        "input": ["a", "b"],
        "encoding_format": "float",
        "dimensions": 3,
        "user": "u",
    }
    tokens = validate(EmbeddingRequest, {"model": "e", "input": [[1, 2], [3]]})
    assert embedding_body(tokens, MODEL)["input"] == [[1, 2], [3]]


def test_every_parameter_is_left_to_the_upstream() -> None:
    provider = OpenAICompatProvider(route_for())
    provider.check(validate(ChatCompletionRequest, FULL_REQUEST))  # no InvalidRequest
    assert provider.supported_params == frozenset(ChatCompletionRequest.model_fields)


def test_base_url_and_timeouts() -> None:
    provider = OpenAICompatProvider(route_for(first_byte_timeout=20, idle_timeout=45, connect_timeout=3))
    assert provider.base_url == "https://api.openai.com/v1"
    assert provider._chat_url == "https://api.openai.com/v1/chat/completions"
    client = provider._open()
    assert (client.timeout.connect, client.timeout.read) == (3, 50)
    assert not client.follow_redirects
    asyncio.run(provider.aclose())
    ollama = OpenAICompatProvider(route_for(base_url="http://localhost:11434/v1/"))
    assert ollama._embeddings_url == "http://localhost:11434/v1/embeddings"


# ---- server-sent events (pure) ---------------------------------------------------------------

RAW_STREAM = (
    b": keepalive\r\n\r\n"
    b'event: message\r\ndata: {"n": 1}\r\n\r\n'
    b'data: {"n":\ndata: 2}\n\n'
    b'data:{"n": 3}\r\r'
    b"id: 7\nretry: 100\n\n"
    b"data:\n\n"
    b'event: error\ndata: {"error": {"message": "x"}}\n\n'
    b'error: {"code": 400, "message": "too long"}\n\n'
    b"data: [DONE]"
)
EXPECTED_EVENTS = [
    (b"message", b'{"n": 1}'),
    (b"", b'{"n":\n2}'),
    (b"", b'{"n": 3}'),
    (b"error", b'{"error": {"message": "x"}}'),
    (b"error", b'{"code": 400, "message": "too long"}'),
    (b"", b"[DONE]"),
]


def decode(pieces: list[bytes]) -> list[tuple[bytes, bytes]]:
    decoder = SSEDecoder()
    events = [e for piece in pieces for e in decoder.feed(piece)]
    return events + decoder.flush()


@pytest.mark.parametrize("split", ["whole", "bytes", "random"])
def test_sse_decoder_is_independent_of_read_boundaries(split: str) -> None:
    if split == "whole":
        pieces = [RAW_STREAM]
    elif split == "bytes":
        pieces = [RAW_STREAM[i : i + 1] for i in range(len(RAW_STREAM))]
    else:
        rng = random.Random(4)
        pieces, i = [], 0
        while i < len(RAW_STREAM):
            step = rng.randint(1, 9)
            pieces.append(RAW_STREAM[i : i + step])
            i += step
    assert decode(pieces) == EXPECTED_EVENTS


def test_sse_decoder_crlf_split_between_reads_is_one_line_end() -> None:
    # "data: a\r" | "\ndata: b\r\n\r\n" is one event with two data lines, not two events.
    assert decode([b"data: a\r", b"\ndata: b\r\n\r\n"]) == [(b"", b"a\nb")]


def sse(*events: Any) -> bytes:
    out = b""
    for event in events:
        out += b"data: " + (event.encode() if isinstance(event, str) else orjson.dumps(event)) + b"\n\n"
    return out


def read_all(raw: bytes, reader: ChunkReader | None = None) -> list[dict[str, Any]]:
    reader = reader or ChunkReader()
    return reader.feed(raw) + reader.end()


def test_reader_relays_chunks_and_ends_with_the_usage_chunk() -> None:
    events = text_events(usage=USAGE)
    chunks = read_all(sse(*events))
    assert chunks == [e for e in events if e != DONE]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == USAGE


def test_reader_splits_usage_from_a_content_chunk() -> None:
    events = text_events(usage=USAGE, usage_on_last=True)
    chunks = read_all(sse(*events))
    *content, last = chunks
    assert all("usage" not in c for c in content)
    assert content[-1]["choices"][0]["finish_reason"] == "stop"
    assert last == {
        "id": "chatcmpl-fake0001",
        "object": "chat.completion.chunk",
        "created": 1_760_000_000,
        "model": MODEL,
        "choices": [],
        "usage": USAGE,
    }
    for c in chunks:
        assert_valid(c, "CreateChatCompletionStreamResponse")


def test_reader_holds_an_early_usage_chunk_until_the_end_and_keeps_the_latest() -> None:
    first = {**USAGE, "completion_tokens": 1}
    raw = sse(chunk({"content": "a"}, usage=first), usage_chunk(first), chunk({"content": "b"}, usage=USAGE), DONE)
    chunks = read_all(raw)
    assert [c["choices"][0]["delta"] for c in chunks[:-1]] == [{"content": "a"}, {"content": "b"}]
    assert chunks[-1]["usage"] == USAGE and chunks[-1]["choices"] == []


def test_reader_without_usage_just_ends() -> None:
    chunks = read_all(sse(*text_events(usage=None)))
    assert chunks and all(c["choices"] for c in chunks)


def test_reader_stops_at_done_and_skips_keepalives() -> None:
    reader = ChunkReader()
    chunks = reader.feed(sse({}, chunk({"content": "a"}), DONE, chunk({"content": "after"})))
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["a"]
    assert reader.done
    assert reader.end() == []


def test_reader_keeps_null_usage_on_content_chunks() -> None:
    chunks = read_all(sse(chunk({"content": "a"}, usage=None), DONE))
    assert chunks == [chunk({"content": "a"}, usage=None)]


@pytest.mark.parametrize(
    ("raw", "status", "etype", "code", "message"),
    [
        (sse(error("Upstream overloaded", type="server_error")), 502, "server_error", None, "Upstream overloaded"),
        (
            sse({"error": {"message": "ctx", "type": "BadRequestError", "code": 400}}),
            400,
            "BadRequestError",
            None,
            "ctx",
        ),
        (
            sse({"object": "error", "message": "vllm flat", "type": "BadRequestError", "param": None, "code": 400}),
            400,
            "BadRequestError",
            None,
            "vllm flat",
        ),
        (
            b'error: {"code": 400, "message": "too long", "type": "invalid_request_error"}\n\n',
            400,
            "invalid_request_error",
            None,
            "too long",
        ),
        (b'event: error\ndata: {"message": "boom"}\n\n', 502, "upstream_error", None, "boom"),
        (sse({"error": "plain string"}), 502, "upstream_error", None, "plain string"),
        (
            sse(error("slow down", type="requests", code="rate_limit_exceeded")),
            502,
            "requests",
            "rate_limit_exceeded",
            "slow down",
        ),
    ],
)
def test_reader_raises_error_events(raw: bytes, status: int, etype: str, code: str | None, message: str) -> None:
    with pytest.raises(GatewayError) as exc:
        ChunkReader().feed(raw)
    err = exc.value
    assert (err.status, err.type, err.code, err.message) == (status, etype, code, message)
    assert_valid(err.body(), "ErrorResponse")


def test_reader_relays_chunks_read_together_with_a_later_error_first() -> None:
    reader = ChunkReader()
    got = reader.feed(sse(chunk({"content": "a"}), error("late", type="server_error"), chunk({"content": "never"})))
    assert got == [chunk({"content": "a"})] and reader.done
    with pytest.raises(GatewayError) as exc:
        reader.end()
    assert exc.value.message == "late"


def test_reader_rejects_malformed_json() -> None:
    with pytest.raises(UpstreamError) as exc:
        ChunkReader().feed(b"data: {not json\n\n")
    assert "malformed stream event" in exc.value.message


# ---- errors (pure) ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422, 429, 500, 503])
def test_openai_form_errors_pass_through_with_their_status(status: int) -> None:
    body = orjson.dumps(
        error("The model `x` is bad.", type="invalid_request_error", param="model", code="model_not_found")
    )
    err = error_from_response(status, body, retry_after="3")
    assert (err.status, err.message, err.type, err.param, err.code) == (
        status,
        "The model `x` is bad.",
        "invalid_request_error",
        "model",
        "model_not_found",
    )
    if status in (429, 500, 503):
        assert err.headers == {"retry-after": "3"}


def test_openai_form_error_without_type_gets_one_and_int_codes_are_dropped() -> None:
    err = error_from_response(400, orjson.dumps({"error": {"message": "bad", "code": 400}}))
    assert (err.type, err.code, err.status) == ("invalid_request_error", None, 400)
    assert_valid(err.body(), "ErrorResponse")


def test_upstream_401_never_relays_its_body() -> None:
    body = orjson.dumps(error("Incorrect API key provided: sk-upst*****test.", code="invalid_api_key"))
    err = error_from_response(401, body)
    assert isinstance(err, UpstreamAuthFailed) and err.status == 401
    assert "sk-" not in err.message and "Incorrect API key" not in err.message


@pytest.mark.parametrize(
    ("status", "body", "cls_status", "needle"),
    [
        (
            502,
            b"<html><head><title>502 Bad Gateway</title></head><body><h1>nginx</h1></body></html>",
            502,
            "502 Bad Gateway",
        ),
        (503, b"upstream connect error or disconnect/reset before headers", 503, "upstream connect error"),
        (422, b'{"detail": [{"loc": ["body"], "msg": "field required"}]}', 400, "field required"),
        (404, b'{"error": "model \\"llama3\\" not found, try pulling it first"}', 404, "try pulling it first"),
        (500, b"", 502, "Internal Server Error"),
    ],
)
def test_other_error_bodies_are_wrapped(status: int, body: bytes, cls_status: int, needle: str) -> None:
    err = error_from_response(status, body, reason="Internal Server Error")
    assert err.status == cls_status
    assert needle in err.message and "openai upstream" in err.message
    assert "<html" not in err.message and "<title" not in err.message


def test_error_messages_never_quote_keys() -> None:
    body = orjson.dumps(error("Key sk-live-abcdef123456 has no access to model", code="denied"))
    err = error_from_response(403, body, secret="sk-live-abcdef123456")
    assert "abcdef123456" not in err.message and "[redacted]" in err.message
    event = error_from_event({"error": {"message": "quota for gsk_x"}}, secret="gsk_x")
    assert "gsk_x" not in event.message


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), 502, "upstream_unreachable"),
        (httpx.ConnectTimeout("timed out"), 502, "upstream_unreachable"),
        (httpx.ReadTimeout("timed out"), 504, "upstream_timeout"),
        (httpx.PoolTimeout("timed out"), 504, "upstream_timeout"),
        (
            httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
            502,
            "upstream_connection_lost",
        ),
        (httpx.ReadError("reset"), 502, "upstream_connection_lost"),
        (
            httpx.UnsupportedProtocol("Request URL is missing an 'http://' or 'https://' protocol."),
            502,
            "upstream_error",
        ),
    ],
)
def test_transport_errors(exc: Exception, status: int, code: str) -> None:
    err = transport_error(exc)
    assert (err.status, err.code) == (status, code)
    assert err.retryable


# ---- usage and fallbacks (pure) ----------------------------------------------------------------


def test_response_tokens_are_counted_for_upstreams_without_usage() -> None:
    assert count_response(completion("one two three", usage=None)) == 3
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]
    assert count_response(completion(None, tool_calls=calls, usage=None)) == 3


def test_json_answer_becomes_stream_chunks() -> None:
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    chunks = completion_to_chunks(completion(None, tool_calls=calls))
    for c in chunks:
        assert_valid(c, "CreateChatCompletionStreamResponse")
    assert chunks[0]["choices"][0]["delta"]["tool_calls"][0]["index"] == 0
    assert chunks[1]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"] == USAGE and chunks[-1]["choices"] == []


# ---- the provider against the fake server ---------------------------------------------------------


def test_complete_sends_the_body_and_returns_the_upstream_json(fake: FakeOpenAI) -> None:
    route = route_for(fake, options={"headers": {"OpenAI-Organization": "org-1"}})
    result = run(lambda p: p.complete(chat_request(temperature=0.2, seed=3)), route)
    assert result == completion()
    (sent,) = fake.requests
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.json == {"model": MODEL, "messages": QUESTION, "temperature": 0.2, "seed": 3}
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["openai-organization"] == "org-1"


def test_no_key_env_sends_no_authorization(fake: FakeOpenAI) -> None:
    run(lambda p: p.complete(chat_request()), route_for(fake, api_key_env=""))
    assert "authorization" not in fake.requests[0].headers


def test_custom_auth_header(fake: FakeOpenAI) -> None:
    run(lambda p: p.complete(chat_request()), route_for(fake, options={"auth_header": "api-key"}))
    headers = fake.requests[0].headers
    assert headers["api-key"] == KEY and "authorization" not in headers


def test_missing_credential_is_503_before_any_request(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(GatewayError) as exc:
        run(lambda p: p.complete(chat_request()), route_for(fake))
    assert (exc.value.status, exc.value.code) == (503, "upstream_credential_missing")
    assert fake.requests == []


def test_key_rotation_is_picked_up(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    async def twice(p: OpenAICompatProvider) -> None:
        await p.complete(chat_request())
        monkeypatch.setenv(KEY_ENV, "sk-rotated-key")
        await p.complete(chat_request())

    run(twice, route_for(fake))
    assert [r.headers["authorization"] for r in fake.requests] == [f"Bearer {KEY}", "Bearer sk-rotated-key"]


def test_one_pooled_connection_serves_sequential_requests(fake: FakeOpenAI) -> None:
    async def four(p: OpenAICompatProvider) -> None:
        await p.complete(chat_request())
        client = p._client
        await drain(p.stream(chat_request(stream=True)))  # read to [DONE]: the connection goes back to the pool
        await drain(p.stream(chat_request(stream=True)))
        await p.complete(chat_request())
        assert p._client is client

    run(four, route_for(fake))
    assert len(fake.peers) == 4 and len(set(fake.peers)) == 1


def test_complete_without_usage_is_relayed_without_usage(fake: FakeOpenAI) -> None:
    fake.script(Reply(json=completion("four words right here", usage=None)))
    result = run(lambda p: p.complete(chat_request()), route_for(fake))
    assert "usage" not in result  # the gateway counts it (see test_e2e_missing_usage_is_counted_and_marked)
    assert_valid(result, "CreateChatCompletionResponse")


def test_complete_with_an_error_inside_a_200(fake: FakeOpenAI) -> None:
    fake.script(Reply(json=error("context too long", code="context_length_exceeded")))
    with pytest.raises(GatewayError) as exc:
        run(lambda p: p.complete(chat_request()), route_for(fake))
    assert exc.value.code == "context_length_exceeded" and exc.value.message == "context too long"


def test_complete_with_a_non_json_200(fake: FakeOpenAI) -> None:
    fake.script(Reply(body=b"<html>captive portal</html>"))
    with pytest.raises(UpstreamError) as exc:
        run(lambda p: p.complete(chat_request()), route_for(fake))
    assert "not a JSON object" in exc.value.message


def test_stream_relays_chunks_and_forces_usage(fake: FakeOpenAI) -> None:
    chunks = run(lambda p: drain(p.stream(chat_request(stream=True))), route_for(fake))
    assert chunks == [e for e in text_events(usage=USAGE) if e != DONE]
    assert fake.requests[0].json["stream_options"] == {"include_usage": True}


def test_stream_first_chunk_arrives_before_the_rest_exists(fake: FakeOpenAI) -> None:
    gate = Gate()
    events = text_events(usage=USAGE)
    fake.script(Reply(events=[events[0], gate, *events[1:]]))

    async def first_then_rest(p: OpenAICompatProvider) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        stream = p.stream(chat_request(stream=True))
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
    chunks = run(lambda p: drain(p.stream(chat_request(stream=True))), route_for(fake))
    assert [c["choices"][0]["delta"].get("content") for c in chunks[:-1]] == ["Hi", " there"]
    assert chunks[-1]["usage"] == USAGE


def test_stream_error_status_surfaces_from_the_first_anext(fake: FakeOpenAI) -> None:
    fake.script(
        Reply(
            status=429,
            json=error("Rate limit reached", type="requests", code="rate_limit_exceeded"),
            headers={"retry-after": "7"},
        )
    )

    async def first(p: OpenAICompatProvider) -> Any:
        stream = p.stream(chat_request(stream=True))
        return await anext(stream)

    with pytest.raises(GatewayError) as exc:
        run(first, route_for(fake))
    err = exc.value
    assert (err.status, err.code, err.message, err.headers) == (
        429,
        "rate_limit_exceeded",
        "Rate limit reached",
        {"retry-after": "7"},
    )


def test_stream_mid_stream_error_event_raises(fake: FakeOpenAI) -> None:
    events = [*text_events()[:3], error("The server had an error", type="server_error")]
    fake.script(Reply(events=events))
    got: list[dict[str, Any]] = []

    async def consume(p: OpenAICompatProvider) -> None:
        async for c in p.stream(chat_request(stream=True)):
            got.append(c)

    with pytest.raises(GatewayError) as exc:
        run(consume, route_for(fake))
    assert len(got) == 3 and exc.value.type == "server_error" and exc.value.status == 502


def test_stream_drop_raises_connection_lost(fake: FakeOpenAI) -> None:
    fake.script(Reply(events=[*text_events()[:2], DROP]))
    got: list[dict[str, Any]] = []

    async def consume(p: OpenAICompatProvider) -> None:
        async for c in p.stream(chat_request(stream=True)):
            got.append(c)

    with pytest.raises(UpstreamError) as exc:
        run(consume, route_for(fake))
    assert len(got) == 2 and exc.value.code == "upstream_connection_lost"


def test_closing_the_stream_early_closes_the_upstream(fake: FakeOpenAI) -> None:
    gate = Gate()
    events = text_events()
    fake.script(Reply(events=[events[0], gate, *events[1:]]))

    async def first_then_close(p: OpenAICompatProvider) -> int:
        stream = p.stream(chat_request(stream=True))
        await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]
        # Closed by then, not later by a garbage-collection finalizer (httpx's pool is private API).
        assert p._client._transport._pool.connections == []  # type: ignore[union-attr]
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
    chunks = run(lambda p: drain(p.stream(chat_request(stream=True))), route_for(fake))
    assert chunks[0]["choices"][0]["delta"]["content"] == "whole answer"
    assert chunks[-1]["usage"] == USAGE


def test_connection_refused_is_unreachable() -> None:
    route = route_for(base_url=f"http://127.0.0.1:{free_port()}/v1", api_key_env="")
    with pytest.raises(GatewayError) as exc:
        run(lambda p: drain(p.stream(chat_request(stream=True))), route)
    assert (exc.value.status, exc.value.code) == (502, "upstream_unreachable")


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


# ---- end to end through the gateway ------------------------------------------------------------


def raw_dump(obj: Any) -> dict[str, Any]:
    return obj.model_dump(exclude_unset=True)


def test_e2e_sync_completion(client: Any, fake: FakeOpenAI, oai_route: Callable[..., Any]) -> None:
    oai_route()
    raw = client.chat.completions.with_raw_response.create(
        model="oai-test", messages=QUESTION, temperature=0.3, max_completion_tokens=50
    )
    body = json.loads(raw.text)
    assert body == completion()
    assert_valid(body, "CreateChatCompletionResponse")
    sent = fake.requests[-1]
    assert sent.json == {"model": MODEL, "messages": QUESTION, "temperature": 0.3, "max_completion_tokens": 50}
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    (row,) = log_rows(request_id=raw.headers["x-request-id"])
    assert (row.provider, row.upstream_model, row.model, row.status_code) == ("openai", MODEL, "oai-test", 200)
    assert (row.prompt_tokens, row.completion_tokens, row.usage_estimated) == (42, 13, False)


def test_e2e_stream_is_real_and_logs_upstream_usage(
    client: Any, fake: FakeOpenAI, oai_route: Callable[..., Any]
) -> None:
    oai_route()
    gate = Gate()
    events = text_events(usage=USAGE)
    fake.script(Reply(events=[events[0], events[1], gate, *events[2:]]))
    try:
        stream = client.chat.completions.create(model="oai-test", messages=QUESTION, stream=True)
        response = stream.response
        first = next(stream)  # arrives while the fake holds everything after it
        assert first.choices[0].delta.role == "assistant"
        second = next(stream)
        assert second.choices[0].delta.content == "Hello"
        assert len(fake.requests) == 1 and not gate._event.is_set()
    finally:
        gate.open()
    chunks = [first, second, *stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == DEFAULT_TEXT
    assert all(c.choices and c.usage is None for c in chunks)  # the client did not ask for usage
    for c in chunks:
        assert_valid(raw_dump(c), "CreateChatCompletionStreamResponse")
    assert fake.requests[0].json["stream_options"] == {"include_usage": True}
    (row,) = log_rows(request_id=response.headers["x-request-id"])
    assert row.stream and row.status_code == 200 and row.finish_reason == "stop"
    assert (row.prompt_tokens, row.completion_tokens, row.usage_estimated) == (42, 13, False)


@pytest.mark.parametrize("mode", ["separate", "on_last_chunk"])
def test_e2e_stream_with_include_usage_gets_upstream_usage(
    raw: httpx.Client, fake: FakeOpenAI, oai_route: Callable[..., Any], mode: str
) -> None:
    oai_route()
    fake.usage_mode = mode
    body = {"model": "oai-test", "messages": QUESTION, "stream": True, "stream_options": {"include_usage": True}}
    with raw.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        payloads = [e.removeprefix("data: ") for e in response.read().decode().split("\n\n") if e]
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    for c in chunks:
        assert_valid(c, "CreateChatCompletionStreamResponse")
    *content, last = chunks
    assert last["choices"] == [] and last["usage"] == USAGE
    assert all(c["choices"] and c["usage"] is None for c in content)
    (row,) = log_rows(request_id=response.headers["x-request-id"])
    assert (row.prompt_tokens, row.completion_tokens, row.usage_estimated) == (42, 13, False)


def test_e2e_stream_from_a_server_that_ignores_include_usage(
    client: Any, fake: FakeOpenAI, oai_route: Callable[..., Any]
) -> None:
    oai_route()
    fake.usage_mode = "ignore"
    stream = client.chat.completions.create(model="oai-test", messages=QUESTION, stream=True)
    chunks = list(stream)
    response = stream.response
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_TEXT
    (row,) = log_rows(request_id=response.headers["x-request-id"])
    assert row.usage_estimated and row.completion_tokens == len(DEFAULT_TEXT.split())


def test_e2e_async_client(async_client: Any, fake: FakeOpenAI, oai_route: Callable[..., Any]) -> None:
    oai_route()

    async def go() -> tuple[Any, list[Any]]:
        done = await async_client.chat.completions.create(model="oai-test", messages=QUESTION)
        stream = await async_client.chat.completions.create(
            model="oai-test", messages=QUESTION, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
        await async_client.close()
        return done, chunks

    done, chunks = asyncio.run(go())
    assert done.choices[0].message.content == DEFAULT_TEXT and done.usage.total_tokens == 55
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_TEXT
    assert chunks[-1].usage.total_tokens == 55


def test_e2e_tools(client: Any, fake: FakeOpenAI, oai_route: Callable[..., Any]) -> None:
    oai_route()
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    call = {
        "id": "call_fake1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        "extra_content": {"google": {"thought_signature": "sig"}},
    }
    fake.script(Reply(json=completion(None, tool_calls=[call])), Reply(json=completion("Sunny in Paris.")))
    r = client.chat.completions.create(model="oai-test", messages=QUESTION, tools=tools, tool_choice="auto")
    assert_valid(without_extensions(raw_dump(r)), "CreateChatCompletionResponse")
    got = r.choices[0].message.tool_calls[0]
    assert (got.id, got.function.name, json.loads(got.function.arguments)) == (
        "call_fake1",
        "get_weather",
        {"city": "Paris"},
    )
    assert r.choices[0].finish_reason == "tool_calls"
    history = [
        *QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_fake1", "content": "sunny, 21C"},
    ]
    r = client.chat.completions.create(model="oai-test", messages=history, tools=tools)
    assert r.choices[0].message.content == "Sunny in Paris."
    assert fake.requests[0].json == {"model": MODEL, "messages": QUESTION, "tools": tools, "tool_choice": "auto"}
    assert fake.requests[1].json == {"model": MODEL, "messages": history, "tools": tools}
    # Streamed tool calls arrive in OpenAI's incremental shape.
    fake.script(Reply(events=tool_call_events("get_weather", '{"city":"Paris"}')))
    chunks = list(client.chat.completions.create(model="oai-test", messages=QUESTION, tools=tools, stream=True))
    for c in chunks:
        assert_valid(raw_dump(c), "CreateChatCompletionStreamResponse")
    deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "get_weather"
    assert "".join(d.function.arguments or "" for d in deltas) == '{"city":"Paris"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("status", "sdk_error"),
    [
        (400, openai.BadRequestError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_e2e_openai_form_errors_pass_through(
    client: Any, fake: FakeOpenAI, oai_route: Callable[..., Any], status: int, sdk_error: type, stream: bool
) -> None:
    oai_route()
    upstream = error(f"Upstream says {status}.", type="invalid_request_error", param="messages", code=f"code_{status}")
    fake.script(Reply(status=status, json=upstream))
    with pytest.raises(sdk_error) as exc:  # a stream fails before its first byte: a plain error answer
        client.chat.completions.create(model="oai-test", messages=QUESTION, stream=stream)
    assert exc.value.status_code == status
    assert exc.value.body == upstream["error"]
    (row,) = log_rows(model="oai-test")
    assert (row.status_code, row.error_code) == (status, f"code_{status}")


def test_e2e_upstream_401_hides_its_body(client: Any, fake: FakeOpenAI, oai_route: Callable[..., Any]) -> None:
    oai_route()
    fake.script(
        Reply(status=401, json=error("Incorrect API key provided: sk-upst*******test.", code="invalid_api_key"))
    )
    with pytest.raises(openai.AuthenticationError) as exc:
        client.chat.completions.create(model="oai-test", messages=QUESTION)
    assert exc.value.status_code == 401
    text = json.dumps(exc.value.body)
    assert "Incorrect API key" not in text and "sk-upst" not in text
    assert exc.value.body["code"] == "upstream_invalid_credential"


def test_e2e_html_502_is_wrapped(client: Any, fake: FakeOpenAI, oai_route: Callable[..., Any]) -> None:
    oai_route()
    page = b"<html><head><title>502 Bad Gateway</title></head><body><center>cloudflare</center></body></html>"
    fake.script(Reply(status=502, body=page, headers={"content-type": "text/html"}))
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="oai-test", messages=QUESTION)
    err = exc.value.body
    assert exc.value.status_code == 502 and err["type"] == "upstream_error"
    assert "502 Bad Gateway" in err["message"] and "<" not in err["message"]


def test_e2e_retry_before_the_first_byte(client: Any, fake: FakeOpenAI, oai_route: Callable[..., Any]) -> None:
    oai_route(max_retries=1)
    fake.script(Reply(status=503, json=error("overloaded", type="server_error")))
    chunks = list(client.chat.completions.create(model="oai-test", messages=QUESTION, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_TEXT
    assert len(fake.requests) == 2


def test_e2e_missing_credential(
    client: Any, fake: FakeOpenAI, oai_route: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    oai_route()
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="oai-test", messages=QUESTION)
    assert exc.value.status_code == 503 and exc.value.body["code"] == "upstream_credential_missing"
    assert fake.requests == []


def test_e2e_keyless_local_server(client: Any, fake: FakeOpenAI, oai_route: Callable[..., Any]) -> None:
    oai_route(api_key_env="")
    assert (
        client.chat.completions.create(model="oai-test", messages=QUESTION).choices[0].message.content == DEFAULT_TEXT
    )
    assert "authorization" not in fake.requests[0].headers


def sse_payloads(response: httpx.Response) -> list[str]:
    return [e.removeprefix("data: ") for e in response.read().decode().split("\n\n") if e]


@pytest.mark.parametrize(
    ("tail", "status", "code"),
    [
        ([error("The server had an error while processing your request.", type="server_error")], 502, None),
        ([DROP], 502, "upstream_connection_lost"),
    ],
    ids=["error-event", "drop"],
)
def test_e2e_mid_stream_failure(
    raw: httpx.Client, fake: FakeOpenAI, oai_route: Callable[..., Any], tail: list[Any], status: int, code: str | None
) -> None:
    oai_route()
    fake.script(Reply(events=text_events()[:3] + tail))
    body = {"model": "oai-test", "messages": QUESTION, "stream": True}
    with raw.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        payloads = sse_payloads(response)
    assert payloads[-1] == "[DONE]"
    *chunks, error_event = [json.loads(p) for p in payloads[:-1]]
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["", "Hello", " from"]
    assert_valid(error_event, "ErrorResponse")
    assert error_event["error"]["code"] == code
    (row,) = log_rows(request_id=response.headers["x-request-id"])
    assert row.stream and row.status_code == status and row.error_message == error_event["error"]["message"]


def test_e2e_client_disconnect_closes_the_upstream(
    raw: httpx.Client, fake: FakeOpenAI, oai_route: Callable[..., Any]
) -> None:
    oai_route()
    gate = Gate()
    events = text_events()
    fake.script(Reply(events=[events[0], gate, *events[1:]]))
    body = {"model": "oai-test", "messages": QUESTION, "stream": True}
    try:
        with raw.stream("POST", "/v1/chat/completions", json=body) as response:
            first = next(response.iter_bytes())
            assert first.startswith(b"data: ")
        request_id = response.headers["x-request-id"]
        wait_for(lambda: fake.disconnects == 1)
    finally:
        gate.open()
    wait_for(lambda: len(log_rows(request_id=request_id)) == 1)
    (row,) = log_rows(request_id=request_id)
    assert row.client_disconnected


def embeddings_available(raw: httpx.Client) -> bool:
    response = raw.post("/v1/embeddings", json={})
    return not (response.status_code == 404 and "Invalid URL" in response.text)


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_e2e_embeddings(
    client: Any, raw: httpx.Client, fake: FakeOpenAI, oai_route: Callable[..., Any], encoding: str
) -> None:
    if not embeddings_available(raw):
        pytest.skip("the gateway has no /v1/embeddings view yet")
    oai_route(model_name="oai-embed", upstream_model="upstream-embed")
    if encoding == "float":
        result = client.embeddings.create(model="oai-embed", input=["first", "second"], encoding_format="float")
    else:  # the SDK's default: it asks for base64 and decodes it
        result = client.embeddings.create(model="oai-embed", input=["first", "second"])
    assert [d.embedding for d in result.data] == [vector(0), vector(1)]
    assert result.usage.prompt_tokens == EMBEDDING_USAGE["prompt_tokens"]
    assert fake.requests[-1].json == {
        "model": "upstream-embed",
        "input": ["first", "second"],
        "encoding_format": "float",
    }
    # What went over the wire to the client is what it asked for.
    wire = raw.post(
        "/v1/embeddings", json={"model": "oai-embed", "input": ["first"], "encoding_format": encoding}
    ).json()
    embedding = wire["data"][0]["embedding"]
    if encoding == "base64":  # the spec's schema documents only the float form
        assert list(struct.unpack("<3f", base64.b64decode(embedding))) == vector(0)
    else:
        assert_valid(wire, "CreateEmbeddingResponse")
        assert embedding == vector(0)


def test_e2e_missing_usage_is_counted_and_marked(client: Any, fake: FakeOpenAI, oai_route: Callable[..., Any]) -> None:
    """An upstream that reports no usage: the client still gets usage, the row says it was counted here."""
    from completions.app import current
    from completions.models import RequestLog

    oai_route()
    fake.script(Reply(json=completion("four words right here", usage=None)))
    result = client.chat.completions.create(model="oai-test", messages=QUESTION)
    assert result.usage.completion_tokens == 4 and result.usage.prompt_tokens > 0
    fake.script(Reply(json=embeddings(2, usage=None)))
    assert client.embeddings.create(model="oai-test", input=["one two", "three"]).usage.prompt_tokens == 3
    assert current().log.flush(10)
    rows = list(RequestLog.objects.order_by("id"))
    assert [(r.endpoint, r.usage_estimated, r.completion_tokens) for r in rows] == [
        ("chat.completions", True, 4),
        ("embeddings", True, 0),
    ]
