"""OpenAI-compatible end to end: the real gateway and the fake server, driven by the official openai SDK."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import log_rows
from tests.fakes.base import DROP, Gate, Reply
from tests.fakes.openai_server import (
    DEFAULT_TEXT,
    EMBEDDING_USAGE,
    MODEL,
    USAGE,
    FakeOpenAI,
    completion,
    embeddings,
    error,
    text_events,
    tool_call_events,
    vector,
)
from tests.openapi import assert_valid, without_extensions
from tests.providers.openai_compat.helpers import KEY, KEY_ENV, QUESTION, wait_for


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
    ("tail", "status", "code", "quoted"),
    [
        ([error("The server had an error while processing your request.", type="server_error")], 502, None, True),
        ([DROP], 502, "upstream_connection_lost", False),
    ],
    ids=["error-event", "drop"],
)
def test_e2e_mid_stream_failure(
    raw: httpx.Client,
    fake: FakeOpenAI,
    oai_route: Callable[..., Any],
    tail: list[Any],
    status: int,
    code: str | None,
    quoted: bool,
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
    assert row.stream and row.status_code == status
    # The upstream's own words are not logged without content logging (they may quote the prompt).
    logged = "[upstream message not logged]" if quoted else error_event["error"]["message"]
    assert row.error_message == logged


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


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_e2e_embeddings(
    client: Any, raw: httpx.Client, fake: FakeOpenAI, oai_route: Callable[..., Any], encoding: str
) -> None:
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


# ---- an upstream that drops nulls (LiteLLM's proxy serializes with exclude_none) ---------------------

# What LiteLLM's proxy (1.110) sends: no `logprobs`, no `refusal`, no `content` beside tool calls, and
# chunks without `finish_reason` until the last; plus fields of its own, which the gateway keeps.
LITELLM_TEXT = {
    "id": "chatcmpl-litellm1",
    "created": 1_760_000_000,
    "model": MODEL,
    "object": "chat.completion",
    "choices": [
        {
            "finish_reason": "stop",
            "index": 0,
            "message": {"content": "hi", "role": "assistant", "provider_specific_fields": {"cached": False}},
        }
    ],
    "usage": {"completion_tokens": 1, "prompt_tokens": 4, "total_tokens": 5},
}
LITELLM_TOOL_CALL = {
    **LITELLM_TEXT,
    "choices": [
        {
            "finish_reason": "tool_calls",
            "index": 0,
            "message": {
                "role": "assistant",
                "tool_calls": [
                    {
                        "function": {"arguments": '{"city":"Paris"}', "name": "get_weather"},
                        "id": "c1",
                        "type": "function",
                    }
                ],
            },
        }
    ],
}
LITELLM_CHUNKS: list[Any] = [
    {
        "id": "chatcmpl-litellm2",
        "created": 1_760_000_000,
        "model": MODEL,
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": word, **({"role": "assistant"} if i == 0 else {})}}],
    }
    for i, word in enumerate(["hel", "lo"])
] + [
    {
        "id": "chatcmpl-litellm2",
        "created": 1_760_000_000,
        "model": MODEL,
        "object": "chat.completion.chunk",
        "choices": [{"finish_reason": "stop", "index": 0, "delta": {}}],
    },
    {
        "id": "chatcmpl-litellm2",
        "created": 1_760_000_000,
        "model": MODEL,
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {"completion_tokens": 2, "prompt_tokens": 4, "total_tokens": 6},
    },
    "[DONE]",
]


def without_litellm_fields(payload: Any) -> Any:
    if isinstance(payload, list):
        return [without_litellm_fields(x) for x in payload]
    if isinstance(payload, dict):
        return {k: without_litellm_fields(v) for k, v in payload.items() if k != "provider_specific_fields"}
    return payload


@pytest.mark.parametrize("upstream", [LITELLM_TEXT, LITELLM_TOOL_CALL], ids=["text", "tool_call"])
def test_e2e_answers_missing_nullable_fields_are_filled(
    raw: httpx.Client, fake: FakeOpenAI, oai_route: Callable[..., Any], upstream: dict[str, Any]
) -> None:
    oai_route()
    fake.script(Reply(json=upstream))
    body = raw.post("/v1/chat/completions", json={"model": "oai-test", "messages": QUESTION}).json()
    assert_valid(without_litellm_fields(body), "CreateChatCompletionResponse")
    (choice,) = body["choices"]
    assert choice["logprobs"] is None and choice["message"]["refusal"] is None
    sent = upstream["choices"][0]["message"]
    assert choice["message"]["content"] == sent.get("content")  # "hi", or null beside the tool calls
    assert {k: v for k, v in choice["message"].items() if k not in ("refusal", "content")} == {
        k: v for k, v in sent.items() if k != "content"
    }  # everything else as the upstream sent it, its own fields included


def test_e2e_chunks_missing_finish_reason_get_null(
    raw: httpx.Client, fake: FakeOpenAI, oai_route: Callable[..., Any]
) -> None:
    oai_route()
    fake.script(Reply(events=LITELLM_CHUNKS))
    body = {"model": "oai-test", "messages": QUESTION, "stream": True, "stream_options": {"include_usage": True}}
    with raw.stream("POST", "/v1/chat/completions", json=body) as resp:
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for chunk in chunks:
        assert_valid(chunk, "CreateChatCompletionStreamResponse")
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]] == [None, None, "stop"]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "hello"
    assert chunks[-1]["usage"]["total_tokens"] == 6
