"""The Messages API end to end on the mock model: the real server, the `anthropic` SDK (sync and
async, create, the stream helper, a tool round trip, count_tokens, errors as exception classes) and
raw SSE checked event by event, with the log row and limits of each request."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from tests.conftest import log_rows

MOCK = "mock-gpt-model"
NO_CACHE = {"cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each server-sent event; every event has an `event:` line matching its data's type."""
    out = []
    for frame in text.split("\n\n"):
        if not frame.strip():
            continue
        lines = dict(line.split(": ", 1) for line in frame.split("\n"))
        assert set(lines) == {"event", "data"}, frame
        data = json.loads(lines["data"])
        assert lines["event"] == data["type"]
        out.append((lines["event"], data))
    return out


def test_create(claude: anthropic.Anthropic) -> None:
    raw = claude.messages.with_raw_response.create(
        model=MOCK, max_tokens=100, messages=[{"role": "user", "content": "hello there"}]
    )
    body = json.loads(raw.http_response.text)
    assert set(body) == {"id", "type", "role", "content", "model", "stop_reason", "stop_sequence", "usage"}
    assert body["content"] == [{"type": "text", "text": "hello there"}]
    assert body["usage"] == {
        "input_tokens": 8,
        "output_tokens": 2,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    message = raw.parse()
    assert message.id.startswith("msg_") and message.stop_reason == "end_turn" and message.model == MOCK
    assert raw.headers["x-gateway-provider"] == "mock" and raw.headers["x-request-id"]
    (row,) = log_rows(request_id=raw.headers["x-request-id"])
    assert (row.endpoint, row.status_code, row.provider, row.stream) == ("messages", 200, "mock", False)
    assert (row.prompt_tokens, row.completion_tokens, row.finish_reason) == (8, 2, "stop")


def test_system_blocks_and_a_system_turn_in_messages(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model=MOCK,
        max_tokens=100,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "ping", "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": "<env>cwd: /tmp</env>"},
        ],
    )
    assert message.content[0].text == "ping"


def test_max_tokens_and_stop_sequences(claude: anthropic.Anthropic) -> None:
    cut = claude.messages.create(model=MOCK, max_tokens=2, messages=[{"role": "user", "content": "one two three"}])
    assert cut.stop_reason == "max_tokens" and cut.content[0].text == "one two"
    stopped = claude.messages.create(
        model=MOCK, max_tokens=50, stop_sequences=["three"], messages=[{"role": "user", "content": "one two three"}]
    )
    assert stopped.content[0].text == "one two"


def test_stream_helper(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model=MOCK, max_tokens=100, messages=[{"role": "user", "content": "one two three"}]
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert final.content[0].text == "one two three" and final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (9, 3)
    rows = log_rows(endpoint="messages")
    assert len(rows) == 1 and rows[0].stream and rows[0].completion_tokens == 3


def test_raw_stream_event_by_event(raw_messages: httpx.Client) -> None:
    body = {
        "model": MOCK,
        "max_tokens": 10,
        "stream": True,
        "messages": [{"role": "user", "content": "a b"}],
    }
    response = raw_messages.post("/v1/messages?beta=true", json=body, headers={"anthropic-beta": "made-up-2099-01-01"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    got = sse_events(response.text)
    assert [name for name, _ in got] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = got[0][1]["message"]
    assert start["id"].startswith("msg_") and start["role"] == "assistant" and start["content"] == []
    assert start["usage"]["input_tokens"] == 8
    assert got[2][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert [d["delta"] for _, d in got[3:5]] == [{"type": "text_delta", "text": t} for t in ("a", " b")]
    assert got[6][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"input_tokens": 8, "output_tokens": 2, **NO_CACHE},
    }


def test_tool_round_trip(claude: anthropic.Anthropic) -> None:
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = claude.messages.create(
        model=MOCK, max_tokens=100, messages=messages, tools=[WEATHER], tool_choice={"type": "any"}
    )
    assert first.stop_reason == "tool_use"
    (call,) = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "get_weather" and call.input == {"city": "Weather in Paris?"} and call.id
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21C"},
                {"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21C"},  # a duplicate
            ],
        },
    ]
    final = claude.messages.create(model=MOCK, max_tokens=100, messages=messages, tools=[WEATHER])
    assert final.stop_reason == "end_turn" and final.content[0].text == "sunny, 21C"


def test_streamed_tool_call(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model=MOCK,
        max_tokens=100,
        messages=[{"role": "user", "content": "Paris"}],
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as stream:
        final = stream.get_final_message()
    (call,) = final.content
    assert call.type == "tool_use" and call.input == {"city": "Paris"} and final.stop_reason == "tool_use"


def test_async_create_and_stream(async_claude: anthropic.AsyncAnthropic) -> None:
    async def run() -> tuple[str, str]:
        message = await async_claude.messages.create(
            model=MOCK, max_tokens=50, messages=[{"role": "user", "content": "async hello"}]
        )
        async with async_claude.messages.stream(
            model=MOCK, max_tokens=50, messages=[{"role": "user", "content": "streamed hello"}]
        ) as stream:
            text = "".join([piece async for piece in stream.text_stream])
        return message.content[0].text, text

    assert asyncio.run(run()) == ("async hello", "streamed hello")


def test_count_tokens(claude: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": "one two three"}]
    counted = claude.messages.count_tokens(model=MOCK, messages=messages)
    assert counted.input_tokens == 9  # the prompt as the mock counts it: 3 + 3 per message + 3 words
    with_tools = claude.messages.count_tokens(model=MOCK, messages=messages, tools=[WEATHER])
    assert with_tools.input_tokens > counted.input_tokens
    rows = log_rows(endpoint="messages.count_tokens")
    assert len(rows) == 2 and all(r.status_code == 200 and r.total_tokens == 0 for r in rows)


def test_both_paths_and_both_auth_headers(gateway: Any, api_key: str) -> None:
    body = {"model": MOCK, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    for path, headers in [
        ("/v1/messages", {"x-api-key": api_key}),
        ("/messages", {"Authorization": f"Bearer {api_key}"}),
        ("/v1/messages?beta=true", {"x-api-key": api_key, "anthropic-version": "2023-06-01"}),
    ]:
        response = httpx.post(gateway.url + path, json=body, headers=headers)
        assert response.status_code == 200 and response.json()["content"][0]["text"] == "hi", path


# ---- errors ----------------------------------------------------------------------------------------


def test_errors_raise_the_sdks_exception_classes(claude: anthropic.Anthropic, gateway: Any) -> None:
    hello = [{"role": "user", "content": "hi"}]
    bad_key = anthropic.Anthropic(api_key="sk-gw-wrong", base_url=gateway.url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as auth:
        bad_key.messages.create(model=MOCK, max_tokens=10, messages=hello)
    assert auth.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="no-such-model", max_tokens=10, messages=hello)
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.create(model=MOCK, max_tokens=10, messages=hello, extra_body={"temperature": 3})
    assert bad.value.body["error"]["type"] == "invalid_request_error"
    assert "temperature" in bad.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as top_k:
        claude.messages.create(model=MOCK, max_tokens=10, messages=hello, extra_body={"top_k": 5})
    assert top_k.value.body["error"]["message"].startswith("top_k:")


def test_rate_limit_and_budget(gateway: Any, user: Any) -> None:
    from completions.keys import create_api_key

    _, secret = create_api_key(user, "rpm", rpm_limit=1)
    limited = anthropic.Anthropic(api_key=secret, base_url=gateway.url, max_retries=0)
    hello = [{"role": "user", "content": "hi"}]
    limited.messages.create(model=MOCK, max_tokens=10, messages=hello)
    with pytest.raises(anthropic.RateLimitError) as exc:
        limited.messages.create(model=MOCK, max_tokens=10, messages=hello)
    assert exc.value.body["error"]["type"] == "rate_limit_error" and exc.value.response.headers["retry-after"]

    _, broke = create_api_key(user, "budget", token_budget=5)
    with pytest.raises(anthropic.RateLimitError) as budget:
        anthropic.Anthropic(api_key=broke, base_url=gateway.url, max_retries=0).messages.create(
            model=MOCK, max_tokens=100, messages=hello
        )
    assert budget.value.response.headers["x-should-retry"] == "false"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "kind"),
    [
        ("GET", "/v1/messages", None, 405, "invalid_request_error"),
        ("POST", "/v1/messages/nope", b"{}", 404, "not_found_error"),
        ("POST", "/v1/messages", b"not json", 400, "invalid_request_error"),
        ("POST", "/v1/messages", b"[1]", 400, "invalid_request_error"),
        ("POST", "/messages/count_tokens", b'{"model": "mock-gpt-model"}', 400, "invalid_request_error"),
    ],
)
def test_raw_failures_in_anthropics_envelope(
    raw_messages: httpx.Client, method: str, path: str, body: bytes | None, status: int, kind: str
) -> None:
    response = raw_messages.request(method, path, content=body)
    assert response.status_code == status
    payload = response.json()
    assert payload["type"] == "error" and payload["error"]["type"] == kind and payload["error"]["message"]


def test_missing_key_and_oversized_body(gateway: Any, settings: Any, api_key: str) -> None:
    response = httpx.post(gateway.url + "/v1/messages", json={"model": MOCK})
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
    settings.GATEWAY_MAX_BODY_BYTES = 1000
    big = {"model": MOCK, "max_tokens": 1, "messages": [{"role": "user", "content": "x" * 5000}]}
    response = httpx.post(gateway.url + "/v1/messages", content=orjson.dumps(big), headers={"x-api-key": api_key})
    assert response.status_code == 413
    assert response.json()["type"] == "error" and response.json()["error"]["type"] == "request_too_large"
    chat = httpx.post(gateway.url + "/v1/chat/completions", content=orjson.dumps(big), headers={"x-api-key": api_key})
    assert chat.status_code == 413 and "type" not in chat.json()  # OpenAI's envelope stays on chat


def test_a_missing_max_tokens_is_logged_as_a_400(raw_messages: httpx.Client) -> None:
    response = raw_messages.post("/v1/messages", json={"model": MOCK, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 400 and "max_tokens" in response.json()["error"]["message"]
    (row,) = log_rows(endpoint="messages")
    assert (row.status_code, row.model, row.error_type) == (400, MOCK, "invalid_request_error")
