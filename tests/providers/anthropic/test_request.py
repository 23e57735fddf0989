"""Anthropic, OpenAI request -> `messages.create()` arguments: pure translation, no network."""

from __future__ import annotations

from typing import Any

import pytest

from completions.providers.anthropic import AnthropicProvider
from completions.providers.base import Route
from completions.providers.inputs import TOOL_ARGUMENTS_MESSAGE
from tests.providers.anthropic.helpers import (
    CLOCK_TOOL,
    HELLO,
    PNG,
    ROUTE,
    WEATHER_TOOL,
    params,
    rejection,
    request,
    user_text,
)


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


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]"])
def test_bad_tool_call_arguments_are_400_naming_them(arguments: str) -> None:
    call = {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    messages = [
        *HELLO,
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "x"},
    ]
    err = rejection(messages=messages, tools=[WEATHER_TOOL])
    assert err.param == "messages[1].tool_calls[0].function.arguments" and err.message == TOOL_ARGUMENTS_MESSAGE


UNSUPPORTED = "unsupported_parameter"  # a parameter (or value) with no Anthropic equivalent


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"n": 2}, "n", UNSUPPORTED),
        ({"logprobs": True}, "logprobs", UNSUPPORTED),
        ({"logit_bias": {"50256": -100}}, "logit_bias", UNSUPPORTED),
        ({"presence_penalty": 0.5}, "presence_penalty", UNSUPPORTED),
        ({"frequency_penalty": -1}, "frequency_penalty", UNSUPPORTED),
        ({"seed": 7}, "seed", UNSUPPORTED),
        ({"audio": {"voice": "alloy", "format": "mp3"}}, "audio", UNSUPPORTED),
        ({"modalities": ["text", "audio"]}, "modalities", UNSUPPORTED),
        ({"web_search_options": {}}, "web_search_options", UNSUPPORTED),
        ({"functions": [{"name": "f"}]}, "functions", UNSUPPORTED),
        ({"verbosity": "low"}, "verbosity", UNSUPPORTED),
        ({"service_tier": "flex"}, "service_tier", UNSUPPORTED),
        ({"response_format": {"type": "json_object"}}, "response_format", UNSUPPORTED),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format.json_schema.schema",
            None,  # a value Anthropic can't take as it is, not a parameter it lacks
        ),
        ({"tools": [{"type": "custom", "custom": {"name": "grammar"}}]}, "tools[0]", UNSUPPORTED),
        ({"messages": [{"role": "user", "content": "hi", "name": "bob"}]}, "messages[0].name", UNSUPPORTED),
        (
            {"messages": [{"role": "function", "name": "f", "content": "x"}]},
            "messages[0].role",
            UNSUPPORTED,
        ),
        (
            {"messages": [*HELLO, {"role": "assistant", "content": "x", "audio": {"id": "a1"}}]},
            "messages[1].audio",
            UNSUPPORTED,
        ),
        ({"reasoning_effort": "low", "max_tokens": 1024}, "max_tokens", None),  # too small for a budget
    ],
)
def test_unhonourable_parameters_are_400(body: dict[str, Any], param: str, code: str | None) -> None:
    err = rejection(**body)
    assert (err.param, err.status, err.code) == (param, 400, code)


def test_neutral_values_of_unsupported_parameters_pass() -> None:
    AnthropicProvider(ROUTE).prepare(
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
