"""The Anthropic provider: pure translation both ways, its I/O against a fake Anthropic, and the gateway end to end."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from completions import protocol as p
from completions.errors import GatewayError, InvalidRequest, ServiceUnavailable, UpstreamError, UpstreamTimeout
from completions.providers.anthropic import (
    AnthropicProvider,
    StreamTranslator,
    build_params,
    convert_error,
    convert_message,
)
from completions.providers.base import Route
from tests.conftest import free_port, log_rows
from tests.fakes.anthropic import (
    FakeAnthropic,
    error_event,
    error_reply,
    message,
    message_start,
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

ROUTE = Route(model_name="claude-test", provider="anthropic", upstream_model="claude-sonnet-4-6")
HELLO = [{"role": "user", "content": "hello"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CLOCK_TOOL = {"type": "function", "function": {"name": "get_time"}}
PNG = "data:image/png;base64,iVBORw0KGgo="


def request(**body: Any) -> p.ChatCompletionRequest:
    return p.validate(p.ChatCompletionRequest, {"model": "claude-test", "messages": HELLO, **body})


def params(route: Route = ROUTE, **body: Any) -> dict[str, Any]:
    return build_params(request(**body), route)


def rejection(route: Route = ROUTE, **body: Any) -> InvalidRequest:
    """The 400 the provider's check raises for `body` (before any upstream call)."""
    with pytest.raises(InvalidRequest) as exc:
        AnthropicProvider(route).check(request(**body))
    return exc.value


def user_text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


# ---- OpenAI request -> Anthropic request ------------------------------------------------------


def test_minimal_request_body() -> None:
    assert params() == {
        "model": "claude-sonnet-4-6",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [user_text("hello")]}],
    }


def test_system_developer_and_merged_turns() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "developer", "content": [{"type": "text", "text": "answer in French"}]},
        {"role": "user", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "un deux"},
        {"role": "assistant", "content": [{"type": "text", "text": "trois"}]},
        {"role": "system", "content": "late rule"},
        {"role": "user", "content": "four"},
    ]
    body = params(messages=messages)
    assert body["system"] == [user_text("be brief"), user_text("answer in French"), user_text("late rule")]
    assert body["messages"] == [
        {"role": "user", "content": [user_text("one"), user_text("two")]},
        {"role": "assistant", "content": [user_text("un deux"), user_text("trois")]},
        {"role": "user", "content": [user_text("four")]},
    ]


@pytest.mark.parametrize(
    ("body", "route_options", "expected"),
    [
        ({}, {}, 4096),
        ({}, {"default_max_tokens": 1000}, 1000),
        ({"max_tokens": 50}, {"default_max_tokens": 1000}, 50),
        ({"max_completion_tokens": 70, "max_tokens": 50}, {}, 70),
    ],
)
def test_max_tokens_default_and_override(body: dict[str, Any], route_options: dict[str, Any], expected: int) -> None:
    route = Route(
        model_name="claude-test", provider="anthropic", upstream_model="claude-sonnet-4-6", options=route_options
    )
    assert params(route, **body)["max_tokens"] == expected


def test_stop_sampling_and_end_user() -> None:
    body = params(stop="END", temperature=0.3, top_p=0.9, user="u-1")
    assert body["stop_sequences"] == ["END"]
    assert body["extra_body"] == {"temperature": 0.3, "top_p": 0.9}
    assert body["metadata"] == {"user_id": "u-1"}
    body = params(stop=["a", "b"], temperature=0, user="u-1", safety_identifier="hash-9")
    assert body["stop_sequences"] == ["a", "b"]
    assert body["extra_body"] == {"temperature": 0}
    assert body["metadata"] == {"user_id": "hash-9"}
    assert "extra_body" not in params() and "metadata" not in params() and "stop_sequences" not in params()


def test_temperature_above_one_is_400_naming_it() -> None:
    err = rejection(temperature=1.5)
    assert err.param == "temperature" and "between 0 and 1" in err.message
    assert params(temperature=1)["extra_body"] == {"temperature": 1}


def test_images_and_files() -> None:
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": PNG}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
        {"type": "file", "file": {"filename": "report.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
        {"type": "file", "file": {"file_data": "data:text/plain;base64,aGVsbG8gdGV4dA=="}},
    ]
    (turn,) = params(messages=[{"role": "user", "content": content}])["messages"]
    assert turn["content"] == [
        user_text("what is this?"),
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
            "title": "report.pdf",
        },
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hello text"}},
    ]


@pytest.mark.parametrize(
    ("part", "param", "needle"),
    [
        (
            {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}},
            "messages[0].content[0].image_url.url",
            "image/bmp",
        ),
        (
            {"type": "image_url", "image_url": {"url": "data:image/png,raw"}},
            "messages[0].content[0].image_url.url",
            "base64",
        ),
        (
            {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}},
            "messages[0].content[0].image_url.url",
            "http(s)",
        ),
        (
            {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
            "messages[0].content[0].image_url.detail",
            "detail: low",
        ),
        ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}, "messages[0].content[0]", "audio"),
        ({"type": "file", "file": {"file_id": "file-123"}}, "messages[0].content[0].file.file_id", "file ids"),
        (
            {"type": "file", "file": {"file_data": "data:image/svg+xml;base64,PHN2Zz4="}},
            "messages[0].content[0].file.file_data",
            "svg",
        ),
    ],
)
def test_bad_content_parts_are_400_naming_the_part(part: dict[str, Any], param: str, needle: str) -> None:
    err = rejection(messages=[{"role": "user", "content": [part]}])
    assert err.param == param and needle in err.message


TOOL_CHOICES = [
    ({}, None),
    ({"tool_choice": "none"}, {"type": "none"}),
    ({"tool_choice": "auto"}, {"type": "auto"}),
    ({"tool_choice": "required"}, {"type": "any"}),
    ({"tool_choice": {"type": "function", "function": {"name": "get_time"}}}, {"type": "tool", "name": "get_time"}),
    ({"parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}),
    ({"parallel_tool_calls": False, "tool_choice": "required"}, {"type": "any", "disable_parallel_tool_use": True}),
    ({"parallel_tool_calls": False, "tool_choice": "none"}, {"type": "none"}),
    ({"parallel_tool_calls": True}, None),
]


@pytest.mark.parametrize(("extra", "expected"), TOOL_CHOICES)
def test_tools_and_tool_choice(extra: dict[str, Any], expected: dict[str, Any] | None) -> None:
    body = params(tools=[WEATHER_TOOL, CLOCK_TOOL], **extra)
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather in a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert body.get("tool_choice") == expected


def test_allowed_tools_and_strict() -> None:
    strict = {"type": "function", "function": {**WEATHER_TOOL["function"], "strict": True}}
    allowed = {
        "type": "allowed_tools",
        "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "get_weather"}}]},
    }
    body = params(tools=[strict, CLOCK_TOOL], tool_choice=allowed)
    assert [t["name"] for t in body["tools"]] == ["get_weather"] and body["tools"][0]["strict"] is True
    assert body["tool_choice"] == {"type": "any"}
    allowed["allowed_tools"] = {"mode": "auto", "tools": [{"type": "function", "function": {"name": "nope"}}]}
    assert rejection(tools=[strict], tool_choice=allowed).param == "tool_choice.allowed_tools.tools[0]"


def test_tool_calls_and_results_pair_up() -> None:
    messages = [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rainy"}]},
        {"role": "user", "content": "thanks, and?"},
    ]
    body = params(messages=messages, tools=[WEATHER_TOOL])
    assert body["messages"] == [
        {"role": "user", "content": [user_text("weather in Paris and Rome?")]},
        {
            "role": "assistant",
            "content": [
                user_text("Checking."),
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": [user_text("rainy")]},
                user_text("thanks, and?"),
            ],
        },
    ]


@pytest.mark.parametrize(("arguments", "needle"), [("{not json", "not valid JSON"), ("[1, 2]", "JSON object")])
def test_bad_tool_call_arguments_are_400_naming_them(arguments: str, needle: str) -> None:
    call = {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    messages = [
        *HELLO,
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "x"},
    ]
    err = rejection(messages=messages, tools=[WEATHER_TOOL])
    assert err.param == "messages[1].tool_calls[0].function.arguments" and needle in err.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": -1}, "frequency_penalty"),
        ({"seed": 7}, "seed"),
        ({"audio": {"voice": "alloy", "format": "mp3"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"verbosity": "low"}, "verbosity"),
        ({"service_tier": "flex"}, "service_tier"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format.json_schema.schema",
        ),
        ({"tools": [{"type": "custom", "custom": {"name": "grammar"}}]}, "tools[0]"),
        ({"messages": [{"role": "user", "content": "hi", "name": "bob"}]}, "messages[0].name"),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
        ({"messages": [*HELLO, {"role": "assistant", "content": "x", "audio": {"id": "a1"}}]}, "messages[1].audio"),
        ({"reasoning_effort": "low", "max_tokens": 1024}, "max_tokens"),
    ],
)
def test_unhonourable_parameters_are_400(body: dict[str, Any], param: str) -> None:
    err = rejection(**body)
    assert err.param == param and err.status == 400
    assert err.code in ("unsupported_parameter", None)


def test_neutral_values_of_unsupported_parameters_pass() -> None:
    AnthropicProvider(ROUTE).check(
        request(
            n=1,
            logprobs=False,
            logit_bias={},
            presence_penalty=0,
            frequency_penalty=0,
            modalities=["text"],
            response_format={"type": "text"},
        )
    )


def test_json_schema_response_format_becomes_output_config() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "description": "The answer", "schema": schema, "strict": True},
    }
    assert params(response_format=fmt)["output_config"] == {
        "format": {"type": "json_schema", "schema": {**schema, "description": "The answer"}}
    }


@pytest.mark.parametrize(
    ("effort", "cap", "thinking", "max_tokens"),
    [
        ("none", None, {"type": "disabled"}, 4096),
        ("minimal", None, {"type": "enabled", "budget_tokens": 1024}, 4096 + 1024),
        ("low", None, {"type": "enabled", "budget_tokens": 2048}, 4096 + 2048),
        ("medium", None, {"type": "enabled", "budget_tokens": 8192}, 4096 + 8192),
        ("high", None, {"type": "enabled", "budget_tokens": 16384}, 4096 + 16384),
        ("xhigh", None, {"type": "enabled", "budget_tokens": 24576}, 4096 + 24576),
        ("max", None, {"type": "enabled", "budget_tokens": 32768}, 4096 + 32768),
        ("high", 3000, {"type": "enabled", "budget_tokens": 2999}, 3000),
        ("low", 50000, {"type": "enabled", "budget_tokens": 2048}, 50000),
    ],
)
def test_reasoning_effort_as_thinking_budget(
    effort: str, cap: int | None, thinking: dict[str, Any], max_tokens: int
) -> None:
    body = params(reasoning_effort=effort, **({"max_completion_tokens": cap} if cap else {}))
    assert body["thinking"] == thinking and body["max_tokens"] == max_tokens
    assert "output_config" not in body


def test_reasoning_effort_adaptive_mode() -> None:
    route = Route(
        model_name="claude-test",
        provider="anthropic",
        upstream_model="claude-opus-4-6",
        options={"thinking": "adaptive"},
    )
    body = params(route, reasoning_effort="high", max_tokens=2000)
    assert body["thinking"] == {"type": "adaptive"} and body["output_config"] == {"effort": "high"}
    assert body["max_tokens"] == 2000
    assert params(route, reasoning_effort="none")["thinking"] == {"type": "disabled"}
    assert rejection(route, reasoning_effort="minimal").param == "reasoning_effort"


def test_prompt_cache_breakpoints_and_options() -> None:
    messages = [
        {
            "role": "system",
            "content": [{"type": "text", "text": "long rules", "prompt_cache_breakpoint": {"mode": "explicit"}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": PNG}, "prompt_cache_breakpoint": {}},
                {"type": "text", "text": "q"},
            ],
        },
    ]
    body = params(messages=messages)
    assert body["system"] == [{"type": "text", "text": "long rules", "cache_control": {"type": "ephemeral"}}]
    assert body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in body["messages"][0]["content"][1] and "cache_control" not in body
    body = params(messages=messages, prompt_cache_options={"ttl": "30m"})
    assert body["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert body["cache_control"] == {"type": "ephemeral", "ttl": "1h"}  # implicit mode: automatic breakpoint
    body = params(messages=messages, prompt_cache_options={"mode": "explicit"})
    assert "cache_control" not in body and body["system"][0]["cache_control"] == {"type": "ephemeral"}


def test_service_tier() -> None:
    assert params(service_tier="auto")["service_tier"] == "auto"
    assert params(service_tier="default")["service_tier"] == "standard_only"


def test_thinking_blocks_ride_back_in_front_of_tool_use() -> None:
    blocks = [{"type": "thinking", "thinking": "hmm", "signature": "sig"}, {"type": "redacted_thinking", "data": "xx"}]
    call = {
        "id": "toolu_9",
        "type": "function",
        "function": {"name": "get_time", "arguments": "{}"},
        "extra_content": {"anthropic": {"thinking_blocks": blocks}},
    }
    messages = [
        *HELLO,
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "toolu_9", "content": "noon"},
    ]
    turn = params(messages=messages, tools=[CLOCK_TOOL], reasoning_effort="low")["messages"][1]
    assert turn["content"] == [*blocks, {"type": "tool_use", "id": "toolu_9", "name": "get_time", "input": {}}]
    call["extra_content"] = {"anthropic": {"thinking_blocks": [{"type": "text", "text": "forged"}]}}
    assert (
        rejection(messages=messages, tools=[CLOCK_TOOL]).param
        == "messages[1].tool_calls[0].extra_content.anthropic.thinking_blocks"
    )


# ---- Anthropic answer -> OpenAI response and chunks --------------------------------------------


def test_text_message_and_usage() -> None:
    msg = message(
        [thinking("let me think"), text("Hello "), text("there.")],
        usage_=usage(
            7,
            12,
            cache_creation_input_tokens=100,
            cache_read_input_tokens=1000,
            output_tokens_details={"thinking_tokens": 4},
        ),
    )
    out = convert_message(msg, "claude-sonnet-4-6")
    assert_valid(out, "CreateChatCompletionResponse")
    assert out["id"].startswith("chatcmpl-") and out["model"] == "claude-sonnet-4-6"
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert out["usage"] == {
        "prompt_tokens": 1107,
        "completion_tokens": 12,
        "total_tokens": 1119,
        "prompt_tokens_details": {"cached_tokens": 1000},
        "completion_tokens_details": {"reasoning_tokens": 4},
    }


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        ("pause_turn", "stop"),
    ],
)
def test_stop_reasons(stop_reason: str, finish: str) -> None:
    content = [tool_use("get_time", {})] if stop_reason == "tool_use" else [text("x")]
    msg = message(content, stop_reason=stop_reason)
    out = convert_message(msg, "m")
    assert out["choices"][0]["finish_reason"] == finish
    chunks = translate(stream_events(msg))
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]][-1] == finish


def test_tool_use_message() -> None:
    msg = message(
        [
            thinking("need weather"),
            redacted_thinking("r"),
            tool_use("get_weather", {"city": "Paris"}, id="toolu_A"),
            tool_use("get_time", {}, id="toolu_B"),
        ],
        stop_reason="tool_use",
    )
    out = convert_message(msg, "m")
    assert_valid(without_extensions(out), "CreateChatCompletionResponse")
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    first, second = choice["message"]["tool_calls"]
    assert first["id"] == "toolu_A" and first["type"] == "function"
    assert first["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert first["extra_content"] == {
        "anthropic": {
            "thinking_blocks": [
                {"type": "thinking", "thinking": "need weather", "signature": "sig-abc"},
                {"type": "redacted_thinking", "data": "r"},
            ]
        }
    }
    assert second == {"id": "toolu_B", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    assert (
        "extra_content"
        not in convert_message(message([tool_use("f", {})], "tool_use"), "m")["choices"][0]["message"]["tool_calls"][0]
    )


def translate(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    translator = StreamTranslator(p.ChunkFactory("claude-sonnet-4-6"))
    chunks = [chunk for event in events for chunk in translator.feed(event)]
    return [*chunks, translator.end()]


def reassemble(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """What a client rebuilds from the chunks: text, tool calls by index, finish reason, usage."""
    content, calls, finish = "", {}, None
    for chunk in chunks[:-1]:
        (c,) = chunk["choices"]
        content += c["delta"].get("content") or ""
        for call in c["delta"].get("tool_calls") or []:
            slot = calls.setdefault(call["index"], {"id": None, "name": None, "arguments": ""})
            slot["id"] = call.get("id") or slot["id"]
            slot["name"] = (call.get("function") or {}).get("name") or slot["name"]
            slot["arguments"] += (call.get("function") or {}).get("arguments") or ""
        finish = c["finish_reason"] or finish
    return {
        "content": content,
        "calls": [calls[i] for i in sorted(calls)],
        "finish": finish,
        "usage": chunks[-1]["usage"],
    }


def test_stream_events_become_openai_chunks() -> None:
    msg = message(
        [
            thinking("plan"),
            text("Let me check."),
            tool_use("get_weather", {"city": "Paris"}, id="toolu_X"),
            tool_use("get_time", {}, id="toolu_Y"),
        ],
        stop_reason="tool_use",
        usage_=usage(20, 30, cache_read_input_tokens=5),
    )
    chunks = translate(stream_events(msg, size=3))
    for chunk in chunks:
        assert_valid(without_extensions(chunk), "CreateChatCompletionStreamResponse")
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:-1])
    finishes = [c["choices"][0]["finish_reason"] for c in chunks[:-1]]
    assert finishes[-1] == "tool_calls" and all(f is None for f in finishes[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == convert_message(msg, "m")["usage"]
    heads = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks[:-1]
        if "id" in (c["choices"][0]["delta"].get("tool_calls") or [{}])[0]
    ]
    assert [h["index"] for h in heads] == [0, 1]
    assert heads[0]["function"] == {"name": "get_weather", "arguments": ""} and heads[0]["type"] == "function"
    assert heads[0]["extra_content"]["anthropic"]["thinking_blocks"] == [
        {"type": "thinking", "thinking": "plan", "signature": "sig-abc"}
    ]
    assert "extra_content" not in heads[1]
    rebuilt = reassemble(chunks)
    assert rebuilt["content"] == "Let me check."
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for c in rebuilt["calls"]] == [
        ("toolu_X", "get_weather", {"city": "Paris"}),
        ("toolu_Y", "get_time", {}),
    ]
    # Split across several events, the arguments still arrive piece by piece.
    assert sum(1 for c in chunks[:-1] if (c["choices"][0]["delta"].get("tool_calls") or [{}])[0].get("index") == 0) > 3


def test_stream_usage_is_cumulative_and_thinking_is_not_content() -> None:
    msg = message([thinking("secret plan"), redacted_thinking(), text("Hi")], usage_=usage(9, 40))
    chunks = translate(stream_events(msg))
    assert reassemble(chunks)["content"] == "Hi"
    assert "secret" not in json.dumps(chunks)
    assert chunks[-1]["usage"]["prompt_tokens"] == 9 and chunks[-1]["usage"]["completion_tokens"] == 40


def test_stream_that_never_finishes_is_an_error() -> None:
    msg = message([text("cut")])
    translator = StreamTranslator(p.ChunkFactory("m"))
    for event in stream_events(msg)[:-2]:  # no message_delta, no message_stop
        translator.feed(event)
    with pytest.raises(UpstreamError) as exc:
        translator.end()
    assert exc.value.code == "upstream_incomplete_stream"


def test_transport_errors_map_to_timeouts_and_unreachable() -> None:
    import anthropic
    import httpx2

    req = httpx2.Request("POST", "http://upstream/v1/messages")
    assert isinstance(convert_error(anthropic.APITimeoutError(request=req)), UpstreamTimeout)
    assert isinstance(convert_error(httpx2.ReadTimeout("slow", request=req)), UpstreamTimeout)
    cut = convert_error(httpx2.RemoteProtocolError("peer closed connection", request=req))
    assert (cut.status, cut.code) == (502, "upstream_unreachable") and "RemoteProtocolError" in cut.message
    refused = convert_error(anthropic.APIConnectionError(request=req))
    assert (refused.status, refused.code) == (502, "upstream_unreachable")


# ---- the provider's I/O against the fake Anthropic -------------------------------------------------


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(fake_server: FakeAnthropic) -> Iterator[FakeAnthropic]:
    fake_server.reset()
    yield fake_server
    fake_server.reset()


def provider_for(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch, **route: Any) -> AnthropicProvider:
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "test-key")
    fields = {
        "model_name": "claude-test",
        "provider": "anthropic",
        "upstream_model": "claude-sonnet-4-6",
        "base_url": fake.url,
        "api_key_env": "TEST_ANTHROPIC_KEY",
    }
    return AnthropicProvider(Route(**{**fields, **route}))


async def drain(provider: AnthropicProvider, req: p.ChatCompletionRequest) -> list[dict[str, Any]]:
    try:
        return [chunk async for chunk in provider.stream(req)]
    finally:
        await provider.aclose()


def test_stream_yields_nothing_before_the_first_upstream_event(
    fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate()
    events = stream_events(message([text("Hi")]))
    fake.script(Reply(events=[gate, *events]))
    provider = provider_for(fake, monkeypatch)

    async def run() -> tuple[bool, dict[str, Any]]:
        stream = provider.stream(request())
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0.3)
        early = first.done()
        gate.open()
        chunk = await first
        await stream.aclose()
        await provider.aclose()
        return early, chunk

    early, chunk = asyncio.run(run())
    assert not early
    assert chunk["choices"][0]["delta"] == {"role": "assistant", "content": ""}


@pytest.mark.parametrize(
    ("reply", "status", "code"),
    [
        (error_reply(429, "rate_limit_error", "slow down", headers={"retry-after": "7"}), 429, "rate_limit_exceeded"),
        (error_reply(529, "overloaded_error", "Overloaded"), 503, "upstream_overloaded"),
        (
            Reply(events=[message_start(message([])), error_event("overloaded_error", "Overloaded")]),
            503,
            "upstream_overloaded",
        ),
        (Reply(events=[message_start(message([])), error_event("api_error", "boom")]), 502, "upstream_error"),
    ],
)
def test_stream_errors_raise_mapped_gateway_errors(
    fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch, reply: Reply, status: int, code: str
) -> None:
    fake.script(reply)
    provider = provider_for(fake, monkeypatch)
    with pytest.raises(GatewayError) as exc:
        asyncio.run(drain(provider, request()))
    assert (exc.value.status, exc.value.code) == (status, code)
    if status == 429:
        assert exc.value.headers["retry-after"] == "7"


def test_unreachable_upstream_and_missing_credential(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    provider = provider_for(fake, monkeypatch, base_url=closed)
    with pytest.raises(UpstreamError) as exc:
        asyncio.run(drain(provider, request()))
    assert exc.value.code == "upstream_unreachable"
    with pytest.raises(UpstreamError):
        asyncio.run(provider.complete(request()))
    monkeypatch.delenv("TEST_ANTHROPIC_KEY")
    keyless = AnthropicProvider(
        Route(
            model_name="c",
            provider="anthropic",
            upstream_model="m",
            base_url=fake.url,
            api_key_env="TEST_ANTHROPIC_KEY",
        )
    )
    with pytest.raises(ServiceUnavailable) as missing:
        asyncio.run(keyless.complete(request()))
    assert missing.value.code == "upstream_credential_missing"
    assert fake.requests == []


def test_default_key_variable_and_timeouts(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "default-key")
    provider = AnthropicProvider(
        Route(
            model_name="c",
            provider="anthropic",
            upstream_model="m",
            base_url=fake.url,
            connect_timeout=2,
            first_byte_timeout=20,
            idle_timeout=40,
        )
    )

    async def run() -> dict[str, Any]:
        try:
            return await provider.complete(request())
        finally:
            await provider.aclose()

    timeout = provider.client().timeout
    assert (timeout.connect, timeout.read) == (2, 45)
    assert provider.client().max_retries == 0
    out = asyncio.run(run())
    assert out["choices"][0]["message"]["content"] == "Hello from the fake."
    assert fake.requests[-1].headers["authorization"] == "Bearer default-key"


# ---- end to end through the gateway with the openai SDK ----------------------------------------------


@pytest.fixture
def claude(gateway: Any, fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> str:
    """A database route `claude-test` to the fake Anthropic (no gateway retries, so one request per attempt)."""
    from completions.models import ModelRoute

    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "test-key")
    ModelRoute.objects.create(
        model_name="claude-test",
        provider="anthropic",
        upstream_model="claude-sonnet-4-6",
        base_url=fake.url,
        api_key_env="TEST_ANTHROPIC_KEY",
        max_retries=0,
    )
    return "claude-test"


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
