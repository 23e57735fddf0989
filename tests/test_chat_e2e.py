"""The quickstart, end to end: the official openai SDK against the real server, mock model."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import log_rows
from tests.openapi import assert_valid

QUESTION = [{"role": "user", "content": "is 1 + 1 equal to 2?"}]


def raw_response(completion: Any) -> dict[str, Any]:
    """The JSON the server sent (the SDK object keeps it whole)."""
    return completion.model_dump(exclude_unset=True)


@pytest.mark.parametrize("suffix", ["/v1", ""], ids=["v1", "bare"])
def test_sync_completion_both_base_urls(gateway: Any, api_key: str, suffix: str) -> None:
    client = openai.OpenAI(api_key=api_key, base_url=gateway.url + suffix, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="mock-gpt-model", messages=QUESTION)
    body = json.loads(raw.text)
    assert_valid(body, "CreateChatCompletionResponse")
    assert raw.headers["x-request-id"].startswith("req_")
    completion = raw.parse()
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "mock-gpt-model"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "is 1 + 1 equal to 2?"
    assert completion.choices[0].finish_reason == "stop"
    assert body["choices"][0]["logprobs"] is None
    usage = completion.usage
    assert usage.completion_tokens == 7
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    (row,) = log_rows(request_id=raw.headers["x-request-id"])
    assert (row.status_code, row.stream, row.model, row.provider) == (200, False, "mock-gpt-model", "mock")
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
    )
    assert row.finish_reason == "stop"
    assert row.request_body is None and row.response_text == ""  # text is not kept by default


@pytest.mark.parametrize("suffix", ["/v1", ""], ids=["v1", "bare"])
def test_sync_stream_both_base_urls(gateway: Any, api_key: str, suffix: str) -> None:
    client = openai.OpenAI(api_key=api_key, base_url=gateway.url + suffix, max_retries=0)
    chunks = list(client.chat.completions.create(model="mock-gpt-model", messages=QUESTION, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "is 1 + 1 equal to 2?"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert len({c.created for c in chunks}) == 1
    finishes = [c.choices[0].finish_reason for c in chunks]
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1])
    assert all(c.usage is None for c in chunks)


def sse_events(response: httpx.Response) -> list[str]:
    """The `data:` payloads of an SSE response, in order, checking the framing."""
    text = response.read().decode()
    events = text.split("\n\n")
    assert events[-1] == ""
    payloads = []
    for event in events[:-1]:
        assert event.startswith("data: "), event
        payloads.append(event[len("data: ") :])
    return payloads


def test_stream_wire_format_and_usage_chunk(raw: httpx.Client) -> None:
    body = {"model": "mock-gpt-model", "messages": QUESTION, "stream": True, "stream_options": {"include_usage": True}}
    with raw.stream("POST", "/v1/chat/completions", json=body, headers={"x-request-id": "my-trace.42"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers["x-request-id"] == "my-trace.42"
        payloads = sse_events(response)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        assert_valid(chunk, "CreateChatCompletionStreamResponse")
    *content_chunks, usage_chunk = chunks
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 7
    assert all(c["usage"] is None for c in content_chunks)
    assert content_chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    # Streaming and non-streaming count the same.
    plain = raw.post("/v1/chat/completions", json={"model": "mock-gpt-model", "messages": QUESTION}).json()
    assert plain["usage"] == usage_chunk["usage"]
    (row,) = log_rows(request_id="my-trace.42")
    assert row.stream and row.status_code == 200 and row.ttft_ms is not None
    assert row.total_tokens == usage_chunk["usage"]["total_tokens"] and not row.usage_estimated


def test_stream_without_include_usage_has_no_usage(raw: httpx.Client) -> None:
    body = {"model": "mock-gpt-model", "messages": QUESTION, "stream": True}
    with raw.stream("POST", "/chat/completions", json=body) as response:
        payloads = sse_events(response)
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert chunks and all("usage" not in c for c in chunks)
    assert all(c["choices"] for c in chunks)
    # The log still has the usage.
    (row,) = log_rows(request_id=response.headers["x-request-id"])
    assert row.completion_tokens == 7


def test_async_client_completion_and_stream(async_client: Any) -> None:
    async def run() -> tuple[Any, list[Any]]:
        completion = await async_client.chat.completions.create(model="mock-gpt-model", messages=QUESTION)
        stream = await async_client.chat.completions.create(
            model="mock-gpt-model", messages=QUESTION, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        await async_client.close()
        return completion, chunks

    completion, chunks = asyncio.run(run())
    assert completion.choices[0].message.content == "is 1 + 1 equal to 2?"
    assert chunks[-1].usage.total_tokens == completion.usage.total_tokens
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == completion.choices[0].message.content
    )


def test_history_and_parameters(client: Any) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": [{"type": "text", "text": "one two three four five"}]},
    ]
    r = client.chat.completions.create(
        model="mock-gpt-model", messages=messages, max_tokens=3, n=2, stop=["zzz"], temperature=0.2, seed=7
    )
    assert [c.message.content for c in r.choices] == ["one two three"] * 2
    assert [c.finish_reason for c in r.choices] == ["length", "length"]
    assert [c.index for c in r.choices] == [0, 1]
    assert r.usage.completion_tokens == 6  # three tokens in each of two choices
    r = client.chat.completions.create(model="mock-gpt-model", messages=messages, stop="three")
    assert r.choices[0].message.content == "one two" and r.choices[0].finish_reason == "stop"
    r = client.chat.completions.create(model="mock-gpt-model", messages=messages, max_completion_tokens=1)
    assert r.choices[0].message.content == "one"
    assert_valid(raw_response(r), "CreateChatCompletionResponse")


def test_stream_n_choices_and_length(client: Any) -> None:
    stream = client.chat.completions.create(
        model="mock-gpt-model", messages=[{"role": "user", "content": "a b c d"}], n=2, max_tokens=2, stream=True
    )
    text: dict[int, str] = {0: "", 1: ""}
    finish: dict[int, list[str | None]] = {0: [], 1: []}
    for chunk in stream:
        assert_valid(chunk.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
        for c in chunk.choices:
            text[c.index] += c.delta.content or ""
            finish[c.index].append(c.finish_reason)
    assert text == {0: "a b", 1: "a b"}
    for reasons in finish.values():
        assert reasons[-1] == "length" and all(r is None for r in reasons[:-1])


def test_logprobs_and_json_mode(client: Any) -> None:
    r = client.chat.completions.create(model="mock-gpt-model", messages=QUESTION, logprobs=True, top_logprobs=1)
    lp = r.choices[0].logprobs.content
    assert "".join(t.token for t in lp) == r.choices[0].message.content
    assert all(t.logprob == 0.0 and t.top_logprobs[0].token == t.token for t in lp)
    assert_valid(raw_response(r), "CreateChatCompletionResponse")
    r = client.chat.completions.create(
        model="mock-gpt-model", messages=QUESTION, response_format={"type": "json_object"}
    )
    assert json.loads(r.choices[0].message.content) == {"echo": "is 1 + 1 equal to 2?"}


def test_tool_call_loop_with_mock(client: Any) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    messages: list[Any] = [{"role": "user", "content": "Paris"}]
    r = client.chat.completions.create(model="mock-gpt-model", messages=messages, tools=tools, tool_choice="required")
    assert_valid(raw_response(r), "CreateChatCompletionResponse")
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls"
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    messages.append(r.choices[0].message)  # the SDK object, as users do
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"})
    r = client.chat.completions.create(model="mock-gpt-model", messages=messages, tools=tools)
    assert r.choices[0].message.content == "sunny, 21C" and r.choices[0].finish_reason == "stop"
    # Streaming tool calls arrive in OpenAI's incremental shape.
    chunks = list(
        client.chat.completions.create(
            model="mock-gpt-model",
            messages=[{"role": "user", "content": "weather in get_weather Rome"}],
            tools=tools,
            stream=True,
        )
    )
    head = chunks[0].choices[0].delta.tool_calls[0]
    assert head.index == 0 and head.id.startswith("call_") and head.function.name == "get_weather"
    args = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    )
    assert json.loads(args) == {"city": "weather in get_weather Rome"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_models_endpoints(client: Any, raw: httpx.Client) -> None:
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert "mock-gpt-model" in ids
    listing = raw.get("/v1/models").json()
    assert_valid(listing, "ListModelsResponse")
    bare = raw.get("/models").json()
    assert bare == listing
    model = client.models.retrieve("mock-gpt-model")
    assert model.id == "mock-gpt-model" and model.owned_by == "mock"
    assert_valid(raw.get("/models/mock-gpt-model").json(), "Model")
    with pytest.raises(openai.NotFoundError) as exc:
        client.models.retrieve("no-such-model")
    assert exc.value.body["code"] == "model_not_found"


def test_json_schema_answers_an_instance_of_the_schema(client: Any) -> None:
    """The offline model answers structured output with a value built from the schema, streamed or not."""
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 1},
            "kind": {"type": "string", "enum": ["cat", "dog"]},
            "owner": {"anyOf": [{"$ref": "#/$defs/Owner"}, {"type": "null"}]},
        },
        "required": ["name", "age", "kind", "owner"],
        "additionalProperties": False,
        "$defs": {"Owner": {"type": "object", "properties": {"email": {"type": "string", "format": "email"}}}},
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "pet", "schema": schema, "strict": True}}
    messages = [{"role": "user", "content": "Rex"}]
    r = client.chat.completions.create(model="mock-gpt-model", messages=messages, response_format=fmt)
    assert_valid(raw_response(r), "CreateChatCompletionResponse")
    expected = {"name": "Rex", "age": 1, "kind": "cat", "owner": {"email": "user@example.com"}}
    assert json.loads(r.choices[0].message.content) == expected
    chunks = client.chat.completions.create(model="mock-gpt-model", messages=messages, response_format=fmt, stream=True)
    assert json.loads("".join(c.choices[0].delta.content or "" for c in chunks if c.choices)) == expected
