"""Anthropic end to end: the real gateway, the real anthropic SDK and the fake Anthropic server,
driven by the official openai SDK."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import log_rows
from tests.fakes.anthropic import (
    FakeAnthropic,
    error_event,
    error_reply,
    message,
    redacted_thinking,
    stream_events,
    stream_reply,
    text,
    thinking,
    tool_use,
    usage,
)
from tests.fakes.base import Gate, Reply
from tests.openapi import assert_valid, without_extensions
from tests.providers.anthropic.helpers import HELLO, WEATHER_TOOL, user_text


def test_e2e_completion_sends_key_and_body(client: Any, claude: str, fake: FakeAnthropic) -> None:
    fake.script(Reply(json=message([text("Bonjour.")], usage_=usage(11, 3))))
    raw = client.chat.completions.with_raw_response.create(
        model=claude,
        messages=[{"role": "system", "content": "French"}, *HELLO],
        max_tokens=20,
        stop=["END"],
        temperature=0.2,
        top_p=0.5,
    )
    body = json.loads(raw.text)
    assert_valid(body, "CreateChatCompletionResponse")
    completion = raw.parse()
    assert completion.choices[0].message.content == "Bonjour." and completion.choices[0].finish_reason == "stop"
    assert completion.model == "claude-sonnet-4-6"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (11, 3)
    (sent,) = fake.requests
    assert sent.path == "/v1/messages"
    assert sent.headers["authorization"] == "Bearer test-key"
    assert sent.headers["anthropic-version"]
    assert sent.json == {
        "model": "claude-sonnet-4-6",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": [user_text("hello")]}],
        "system": [user_text("French")],
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "top_p": 0.5,
    }
    (row,) = log_rows(request_id=raw.headers["x-request-id"])
    assert (row.provider, row.upstream_model, row.prompt_tokens, row.completion_tokens) == (
        "anthropic",
        "claude-sonnet-4-6",
        11,
        3,
    )
    assert row.finish_reason == "stop"


def test_e2e_sync_stream(client: Any, claude: str, fake: FakeAnthropic) -> None:
    fake.script(stream_reply(message([text("one two three four")], usage_=usage(8, 4))))
    chunks = list(
        client.chat.completions.create(
            model=claude, messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    for chunk in chunks:
        assert_valid(chunk.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one two three four"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 12
    assert fake.requests[0].json["stream"] is True


def test_e2e_async_completion_and_stream(async_client: Any, claude: str, fake: FakeAnthropic) -> None:
    fake.script(Reply(json=message([text("async hi")])), stream_reply(message([text("async hi")])))

    async def run() -> tuple[Any, list[Any]]:
        completion = await async_client.chat.completions.create(model=claude, messages=HELLO)
        stream = await async_client.chat.completions.create(model=claude, messages=HELLO, stream=True)
        chunks = [chunk async for chunk in stream]
        await async_client.close()
        return completion, chunks

    completion, chunks = asyncio.run(run())
    assert completion.choices[0].message.content == "async hi"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "async hi"
    assert [r.json.get("stream") for r in fake.requests] == [None, True]


def test_e2e_stream_chunks_arrive_while_upstream_holds_back(client: Any, claude: str, fake: FakeAnthropic) -> None:
    msg = message([text("early late")])
    events = stream_events(msg, size=6)  # start, ping, block start, "early ", "late", block stop, delta, stop
    gate = Gate()
    fake.script(Reply(events=[*events[:4], gate, *events[4:]]))
    stream = client.chat.completions.create(model=claude, messages=HELLO, stream=True)
    started = time.monotonic()
    seen = ""
    for chunk in stream:
        seen += chunk.choices[0].delta.content or ""
        if seen == "early ":
            break
    assert time.monotonic() - started < 5
    assert not gate._event.is_set()  # the upstream was still holding the rest back
    gate.open()
    rest = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert seen + rest == "early late"


def test_e2e_tool_call_round_trip(client: Any, claude: str, fake: FakeAnthropic) -> None:
    fake.script(
        Reply(
            json=message(
                [text("Let me look."), tool_use("get_weather", {"city": "Paris"}, id="toolu_01W")],
                stop_reason="tool_use",
            )
        ),
        Reply(json=message([text("Sunny in Paris.")])),
    )
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    r = client.chat.completions.create(
        model=claude, messages=messages, tools=[WEATHER_TOOL], tool_choice="required", parallel_tool_calls=False
    )
    assert r.choices[0].finish_reason == "tool_calls"
    call = r.choices[0].message.tool_calls[0]
    assert call.id == "toolu_01W" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    messages.append(r.choices[0].message)  # the SDK object, as users do
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"})
    r = client.chat.completions.create(model=claude, messages=messages, tools=[WEATHER_TOOL])
    assert r.choices[0].message.content == "Sunny in Paris."
    first, second = fake.bodies
    assert first["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert first["tools"][0]["name"] == "get_weather"
    assert second["messages"] == [
        {"role": "user", "content": [user_text("Weather in Paris?")]},
        {
            "role": "assistant",
            "content": [
                user_text("Let me look."),
                {"type": "tool_use", "id": "toolu_01W", "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01W", "content": "sunny, 21C"}]},
    ]


def test_e2e_thinking_blocks_survive_the_tool_loop(client: Any, claude: str, fake: FakeAnthropic) -> None:
    fake.script(
        Reply(
            json=message(
                [
                    thinking("Paris, so call the tool", "sig-1"),
                    redacted_thinking("zz"),
                    tool_use("get_weather", {"city": "Paris"}, id="toolu_T"),
                ],
                "tool_use",
            )
        ),
        Reply(json=message([thinking("done", "sig-2"), text("Sunny.")])),
    )
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    r = client.chat.completions.create(model=claude, messages=messages, tools=[WEATHER_TOOL], reasoning_effort="low")
    assert_valid(without_extensions(r.model_dump(exclude_unset=True)), "CreateChatCompletionResponse")
    assert "Paris, so call" not in (r.choices[0].message.content or "")
    messages += [r.choices[0].message, {"role": "tool", "tool_call_id": "toolu_T", "content": "sunny"}]
    r = client.chat.completions.create(model=claude, messages=messages, tools=[WEATHER_TOOL], reasoning_effort="low")
    assert r.choices[0].message.content == "Sunny."
    first, second = fake.bodies
    assert first["thinking"] == {"type": "enabled", "budget_tokens": 2048} and first["max_tokens"] == 4096 + 2048
    assert second["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "Paris, so call the tool", "signature": "sig-1"},
        {"type": "redacted_thinking", "data": "zz"},
        {"type": "tool_use", "id": "toolu_T", "name": "get_weather", "input": {"city": "Paris"}},
    ]


def test_e2e_streamed_tool_call(client: Any, claude: str, fake: FakeAnthropic) -> None:
    fake.script(
        stream_reply(message([tool_use("get_weather", {"city": "Rome"}, id="toolu_S")], stop_reason="tool_use"), size=3)
    )
    chunks = list(client.chat.completions.create(model=claude, messages=HELLO, tools=[WEATHER_TOOL], stream=True))
    head = next(c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls)
    assert (head.index, head.id, head.type, head.function.name, head.function.arguments) == (
        0,
        "toolu_S",
        "function",
        "get_weather",
        "",
    )
    args = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    )
    assert json.loads(args) == {"city": "Rome"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("status", "error_type", "exception", "gateway_status"),
    [
        (400, "invalid_request_error", openai.BadRequestError, 400),
        (401, "authentication_error", openai.AuthenticationError, 401),
        (403, "permission_error", openai.PermissionDeniedError, 403),
        (404, "not_found_error", openai.NotFoundError, 404),
        (429, "rate_limit_error", openai.RateLimitError, 429),
        (500, "api_error", openai.InternalServerError, 502),
        (529, "overloaded_error", openai.InternalServerError, 503),
    ],
)
def test_e2e_upstream_errors_map_to_openai_errors(
    client: Any,
    claude: str,
    fake: FakeAnthropic,
    status: int,
    error_type: str,
    exception: type[Exception],
    gateway_status: int,
) -> None:
    fake.script(error_reply(status, error_type, f"upstream says {error_type}"))
    with pytest.raises(exception) as exc:
        client.chat.completions.create(model=claude, messages=HELLO)
    assert exc.value.status_code == gateway_status
    body = exc.value.response.json()
    assert_valid(body, "ErrorResponse")
    message_ = body["error"]["message"]
    assert "test-key" not in exc.value.response.text
    if status == 401:
        assert "gateway's credential" in message_ and body["error"]["code"] == "upstream_invalid_credential"
    else:
        assert f"upstream says {error_type}" in message_
    assert len(fake.requests) == 1
    (row,) = log_rows(model=claude)
    assert row.status_code == gateway_status


def test_e2e_unsupported_parameter_never_reaches_upstream(client: Any, claude: str, fake: FakeAnthropic) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=claude, messages=HELLO, logprobs=True)
    assert exc.value.body["param"] == "logprobs" and exc.value.body["code"] == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=claude, messages=HELLO, temperature=1.7, stream=True)
    assert exc.value.body["param"] == "temperature"
    assert fake.requests == []


def sse_payloads(response: httpx.Response) -> list[str]:
    return [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]


def test_e2e_mid_stream_error_event(raw: httpx.Client, claude: str, fake: FakeAnthropic) -> None:
    msg = message([text("partial answer")])
    events = stream_events(msg)
    fake.script(Reply(events=[*events[:5], error_event("overloaded_error", "Overloaded")]))
    body = {"model": claude, "messages": HELLO, "stream": True}
    with raw.stream(
        "POST", "/v1/chat/completions", json=body, headers={"x-request-id": "mid-stream-error"}
    ) as response:
        assert response.status_code == 200
        payloads = sse_payloads(response)
    assert payloads[-1] == "[DONE]"
    error = json.loads(payloads[-2])
    assert_valid(error, "ErrorResponse")
    assert error["error"]["code"] == "upstream_overloaded"
    chunks = [json.loads(x) for x in payloads[:-2]]
    assert (
        "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "partial "
    )  # two text deltas before the error
    (row,) = log_rows(request_id="mid-stream-error")
    assert (row.status_code, row.error_code) == (503, "upstream_overloaded") and row.stream


def test_e2e_client_disconnect_closes_upstream_stream(
    gateway: Any, api_key: str, claude: str, fake: FakeAnthropic
) -> None:
    msg = message([text("first part, then much more")])
    events = stream_events(msg, size=11)
    gate = Gate()
    fake.script(Reply(events=[*events[:4], gate, *events[4:]]))
    body = {"model": claude, "messages": HELLO, "stream": True}
    headers = {"Authorization": f"Bearer {api_key}", "x-request-id": "gone-early"}
    with (
        httpx.Client(timeout=10) as http,
        http.stream("POST", gateway.url + "/v1/chat/completions", json=body, headers=headers) as response,
    ):
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
    deadline = time.monotonic() + 10
    while fake.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.disconnects == 1
    deadline = time.monotonic() + 10
    while not log_rows(request_id="gone-early") and time.monotonic() < deadline:
        time.sleep(0.05)
    (row,) = log_rows(request_id="gone-early")
    assert row.client_disconnected and row.provider == "anthropic"
