"""The Gemini provider: pure translation both ways, then end to end through the real gateway,
the real google-genai SDK and a fake Gemini server, driven by the official openai SDK."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from google.genai import errors as genai_errors
from google.genai import types

from completions import protocol as p
from completions.errors import GatewayError, InvalidRequest
from completions.providers.base import Route
from completions.providers.gemini import (
    SKIP_SIGNATURE,
    GeminiProvider,
    StreamTranslator,
    completion_from,
    connect_timeout_hook,
    from_api_error,
    http_options,
    to_gemini,
    upstream_errors,
)
from tests.conftest import log_rows
from tests.fakes.base import DROP, Gate, Reply
from tests.fakes.gemini import (
    FakeGemini,
    blocked_response,
    call_part,
    candidate,
    canonical,
    decoded_signature,
    embed_response,
    error,
    error_reply,
    logprobs_result,
    response,
    text_part,
    text_response,
    usage,
)
from tests.openapi import assert_valid, without_extensions

SIGNATURE = b"\xfb\xff\xfe-sig-\x00\x01\xfa"  # differs between the standard and URL-safe alphabets
KEY_ENV = "TEST_GEMINI_KEY"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
PNG = b"\x89PNG\r\n\x1a\n\xfb\xff"
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


# ---- helpers -------------------------------------------------------------------------------


def chat(**body: Any) -> p.ChatCompletionRequest:
    body.setdefault("model", "gem")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return p.validate(p.ChatCompletionRequest, body)


def wire(request: p.ChatCompletionRequest, model: str = "gemini-2.5-flash") -> dict[str, Any]:
    """The Gemini request (contents and config) as plain data, for comparisons."""
    gemini = to_gemini(request, model)
    return {
        "contents": [c.model_dump(exclude_none=True) for c in gemini.contents],
        "config": gemini.config.model_dump(exclude_none=True),
    }


def gemini_response(payload: dict[str, Any]) -> types.GenerateContentResponse:
    return types.GenerateContentResponse.model_validate(payload)


def route(**fields: Any) -> Route:
    base = {"model_name": "gem", "provider": "gemini", "upstream_model": "gemini-2.5-flash", "api_key_env": KEY_ENV}
    return Route(**{**base, **fields})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4))


# ---- request translation ------------------------------------------------------------------------


def test_history_roles_system_instruction_and_merged_turns() -> None:
    request = chat(
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "first"},
            {"role": "user", "content": [{"type": "text", "text": "second"}]},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "assistant", "content": "réponse"},
            {"role": "assistant", "content": [{"type": "text", "text": "suite"}]},
            {"role": "user", "content": "third"},
        ]
    )
    gemini = to_gemini(request, "gemini-2.5-flash")
    assert [part.text for part in gemini.config.system_instruction.parts] == ["Be terse.", "Answer in French."]
    assert [(c.role, [part.text for part in c.parts]) for c in gemini.contents] == [
        ("user", ["first", "second"]),
        ("model", ["réponse", "suite"]),
        ("user", ["third"]),
    ]


def test_only_system_messages_is_a_400() -> None:
    with pytest.raises(InvalidRequest) as exc:
        to_gemini(chat(messages=[{"role": "system", "content": "x"}]), "gemini-2.5-flash")
    assert exc.value.param == "messages"


def test_tool_calls_and_results_become_function_parts() -> None:
    request = chat(
        messages=[
            {"role": "user", "content": "weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        "extra_content": {"google": {"thought_signature": b64(SIGNATURE)}},
                    },
                    {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_b", "content": "noon"},
            {"role": "tool", "tool_call_id": "call_a", "content": [{"type": "text", "text": "sunny"}]},
        ],
        tools=[WEATHER_TOOL],
    )
    _user, model, results = to_gemini(request, "gemini-2.5-flash").contents
    assert model.role == "model"
    first, second = model.parts
    assert (first.function_call.name, first.function_call.args, first.thought_signature) == (
        "get_weather",
        {"city": "Paris"},
        SIGNATURE,
    )
    assert (second.function_call.name, second.function_call.args, second.thought_signature) == ("get_time", {}, None)
    assert results.role == "user"
    assert [(r.function_response.name, r.function_response.response) for r in results.parts] == [
        ("get_time", {"result": "noon"}),
        ("get_weather", {"result": "sunny"}),
    ]


def test_signature_accepted_in_url_safe_alphabet_and_placeholder_when_missing() -> None:
    urlsafe = base64.urlsafe_b64encode(SIGNATURE).decode().rstrip("=")
    calls = [
        {
            "id": "c1",
            "type": "function",
            "function": {"name": "f", "arguments": "{}"},
            "extra_content": {"google": {"thought_signature": urlsafe}},
        },
    ]
    unsigned = [
        {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "c3", "type": "function", "function": {"name": "f", "arguments": "{}"}},
    ]
    request = chat(
        messages=[
            {"role": "user", "content": "go"},
            {"role": "assistant", "tool_calls": calls},
            {"role": "tool", "tool_call_id": "c1", "content": "1"},
            {"role": "assistant", "tool_calls": unsigned},
        ]
    )
    contents = to_gemini(request, "gemini-3-pro-preview").contents
    assert contents[1].parts[0].thought_signature == SIGNATURE
    # A turn that never had a signature gets Google's placeholder on its first call only.
    assert [part.thought_signature for part in contents[3].parts] == [SKIP_SIGNATURE, None]
    assert base64.urlsafe_b64encode(SKIP_SIGNATURE).decode() == "skip_thought_signature_validator"


@pytest.mark.parametrize(
    "messages, param",
    [
        (
            [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "r"}],
            "messages[1].tool_call_id",
        ),
        (
            [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}],
                },
            ],
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{"}}],
                },
            ],
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            [
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                            "extra_content": {"google": {"thought_signature": "not base64!"}},
                        }
                    ],
                },
            ],
            "messages[1].tool_calls[0].extra_content.google.thought_signature",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}],
            "messages[0].content[0].image_url.url",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}]}],
            "messages[0].content[0].image_url.url",
        ),
        ([{"role": "function", "name": "f", "content": "x"}], "messages[0].role"),
    ],
)
def test_malformed_history_is_a_400_naming_the_parameter(messages: list[Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        to_gemini(chat(messages=messages), "gemini-2.5-flash")
    assert exc.value.param == param and exc.value.status == 400


def test_content_parts_images_audio_and_files() -> None:
    wav = b"RIFF\x00\x01wav"
    pdf = b"%PDF-1.7 \xff"
    request = chat(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": PNG_URL, "detail": "high"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/photos/cat.JPG?size=large"}},
                    {"type": "image_url", "image_url": {"url": "data:image/svg+xml,%3Csvg%2F%3E"}},
                    {"type": "input_audio", "input_audio": {"data": b64(wav), "format": "wav"}},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64," + b64(pdf)}},
                    {"type": "file", "file": {"filename": "notes.pdf", "file_data": b64(pdf)}},
                ],
            }
        ]
    )
    parts = to_gemini(request, "gemini-2.5-flash").contents[0].parts
    assert parts[0].text == "look"
    assert (parts[1].inline_data.mime_type, parts[1].inline_data.data) == ("image/png", PNG)
    assert (parts[2].file_data.file_uri, parts[2].file_data.mime_type) == (
        "https://example.com/photos/cat.JPG?size=large",
        "image/jpeg",
    )
    assert (parts[3].inline_data.mime_type, parts[3].inline_data.data) == ("image/svg+xml", b"<svg/>")
    assert (parts[4].inline_data.mime_type, parts[4].inline_data.data) == ("audio/wav", wav)
    assert (parts[5].inline_data.mime_type, parts[5].inline_data.data) == ("application/pdf", pdf)
    assert (parts[6].inline_data.mime_type, parts[6].inline_data.data) == ("application/pdf", pdf)


@pytest.mark.parametrize(
    "part, param",
    [
        (
            {"type": "image_url", "image_url": {"url": "https://example.com/image"}},
            "messages[0].content[0].image_url.url",
        ),
        (
            {"type": "image_url", "image_url": {"url": "https://example.com/anim.gif"}},
            "messages[0].content[0].image_url.url",
        ),
        ({"type": "file", "file": {"file_id": "file-abc"}}, "messages[0].content[0].file.file_id"),
        ({"type": "file", "file": {"filename": "blob", "file_data": "AAAA"}}, "messages[0].content[0].file.filename"),
    ],
)
def test_parts_gemini_cannot_take_are_unsupported(part: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        to_gemini(chat(messages=[{"role": "user", "content": [part]}]), "gemini-2.5-flash")
    assert (exc.value.param, exc.value.code) == (param, "unsupported_parameter")


def test_generation_config_mapping() -> None:
    request = chat(
        temperature=0.3,
        top_p=0.9,
        seed=42,
        presence_penalty=0.5,
        frequency_penalty=-0.25,
        max_tokens=100,
        max_completion_tokens=256,
        stop="END",
        n=2,
        logprobs=True,
        top_logprobs=3,
        response_format={"type": "json_object"},
        service_tier="flex",
    )
    config = wire(request)["config"]
    assert {k: v for k, v in config.items() if k not in ("automatic_function_calling", "automatic_continuation")} == {
        "temperature": 0.3,
        "top_p": 0.9,
        "seed": 42,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.25,
        "max_output_tokens": 256,
        "stop_sequences": ["END"],
        "candidate_count": 2,
        "response_logprobs": True,
        "logprobs": 3,
        "response_mime_type": "application/json",
        "service_tier": types.ServiceTier.FLEX,
    }
    assert config["automatic_continuation"] is False  # a cut stream must not be silently re-requested
    assert config["automatic_function_calling"]["disable"] is True


def test_unset_parameters_are_not_sent() -> None:
    config = wire(chat(max_tokens=7, service_tier="default"))["config"]
    assert set(config) == {"max_output_tokens", "automatic_continuation", "automatic_function_calling"}


def test_json_schema_response_format() -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    config = to_gemini(
        chat(response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": True}}),
        "gemini-2.5-flash",
    ).config
    assert (config.response_mime_type, config.response_json_schema) == ("application/json", schema)


@pytest.mark.parametrize(
    "tool_choice, mode, allowed, declared",
    [
        (None, None, None, ["get_weather", "get_time"]),
        ("none", "NONE", None, ["get_weather", "get_time"]),
        ("auto", "AUTO", None, ["get_weather", "get_time"]),
        ("required", "ANY", None, ["get_weather", "get_time"]),
        ({"type": "function", "function": {"name": "get_time"}}, "ANY", ["get_time"], ["get_weather", "get_time"]),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "get_time"}}],
                },
            },
            "ANY",
            ["get_time"],
            ["get_weather", "get_time"],
        ),
        (
            {
                "type": "allowed_tools",
                "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": "get_time"}}]},
            },
            "AUTO",
            None,
            ["get_time"],
        ),
    ],
)
def test_tools_and_tool_choice(
    tool_choice: Any, mode: str | None, allowed: list[str] | None, declared: list[str]
) -> None:
    time_tool = {"type": "function", "function": {"name": "get_time"}}
    body: dict[str, Any] = {"tools": [WEATHER_TOOL, time_tool]}
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    config = to_gemini(chat(**body), "gemini-2.5-flash").config
    (tool,) = config.tools
    assert [d.name for d in tool.function_declarations] == declared
    if "get_weather" in declared:
        weather = tool.function_declarations[0]
        assert (weather.description, weather.parameters_json_schema) == (
            "Weather in a city",
            WEATHER_TOOL["function"]["parameters"],
        )
    calling = config.tool_config.function_calling_config if config.tool_config else None
    assert (calling.mode.value if calling else None) == mode
    assert (calling.allowed_function_names if calling else None) == allowed


@pytest.mark.parametrize(
    "model, effort, budget, level",
    [
        ("gemini-2.5-flash", "none", 0, None),
        ("gemini-2.5-flash", "minimal", 512, None),
        ("gemini-2.5-pro", "low", 1024, None),
        ("gemini-2.5-flash", "medium", 8192, None),
        ("gemini-2.5-flash", "high", 24576, None),
        ("gemini-3-pro-preview", "none", 0, None),
        ("gemini-3-pro-preview", "minimal", None, "MINIMAL"),
        ("gemini-3-pro-preview", "low", None, "LOW"),
        ("gemini-3-flash", "medium", None, "MEDIUM"),
        ("gemini-3-pro-preview", "high", None, "HIGH"),
        ("gemini-3-pro-preview", "xhigh", None, "XHIGH"),
    ],
)
def test_reasoning_effort_to_thinking(model: str, effort: str, budget: int | None, level: str | None) -> None:
    thinking = to_gemini(chat(reasoning_effort=effort), model).config.thinking_config
    assert thinking.thinking_budget == budget
    assert (thinking.thinking_level.value if thinking.thinking_level else None) == level


@pytest.mark.parametrize(
    "model, effort", [("gemini-2.5-flash", "xhigh"), ("gemini-2.5-flash", "max"), ("gemini-3-pro-preview", "max")]
)
def test_reasoning_effort_without_equivalent_is_a_400(model: str, effort: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        to_gemini(chat(reasoning_effort=effort), model)
    assert (exc.value.param, exc.value.code) == ("reasoning_effort", "unsupported_parameter")


@pytest.mark.parametrize(
    "params, param",
    [
        ({"logit_bias": {"42": 10}}, "logit_bias"),
        ({"audio": {"voice": "alloy", "format": "wav"}, "modalities": ["text", "audio"]}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"verbosity": "low"}, "verbosity"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"prompt_cache_retention": "24h"}, "prompt_cache_retention"),
        ({"service_tier": "scale"}, "service_tier"),
        ({"tools": [WEATHER_TOOL], "parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"tools": [{"type": "custom", "custom": {"name": "grep"}}]}, "tools[0]"),
        (
            {
                "tools": [WEATHER_TOOL, {"type": "custom", "custom": {"name": "grep"}}],
                "tool_choice": {"type": "custom", "custom": {"name": "grep"}},
            },
            "tools[1]",
        ),
    ],
)
def test_check_rejects_what_gemini_cannot_honour(params: dict[str, Any], param: str) -> None:
    provider = GeminiProvider(route())
    with pytest.raises(InvalidRequest) as exc:
        provider.check(chat(**params))
    assert (exc.value.param, exc.value.code, exc.value.status) == (param, "unsupported_parameter", 400)
    assert "gemini" in exc.value.message.lower() or param in exc.value.message


def test_check_accepts_what_gemini_honours() -> None:
    GeminiProvider(route()).check(
        chat(
            temperature=1,
            top_p=1,
            n=1,
            stop=["a"],
            max_tokens=5,
            presence_penalty=0,
            frequency_penalty=0,
            seed=1,
            logprobs=True,
            top_logprobs=2,
            response_format={"type": "text"},
            tools=[WEATHER_TOOL],
            tool_choice="auto",
            parallel_tool_calls=True,
            reasoning_effort="low",
            service_tier="priority",
            modalities=["text"],
            user="u",
            metadata={"k": "v"},
            store=False,
        )
    )


# ---- response translation -------------------------------------------------------------------------


def test_text_answer_and_usage() -> None:
    payload = response(
        candidate(text_part("thinking hard", thought=True), text_part("Hello"), text_part(" world")),
        usage_=usage(11, 5, thoughts=7, cached=4),
    )
    out = completion_from(gemini_response(payload), "gemini-2.5-flash")
    assert_valid(out, "CreateChatCompletionResponse")
    assert out["model"] == "gemini-2.5-flash" and out["id"].startswith("chatcmpl-")
    (choice,) = out["choices"]
    assert choice["message"] == {"role": "assistant", "content": "Hello world", "refusal": None}
    assert choice["finish_reason"] == "stop"
    assert out["usage"] == {
        "prompt_tokens": 11,
        "completion_tokens": 12,
        "total_tokens": 23,
        "completion_tokens_details": {"reasoning_tokens": 7},
        "prompt_tokens_details": {"cached_tokens": 4},
    }


def test_function_calls_become_tool_calls_with_signatures() -> None:
    payload = response(
        candidate(
            text_part("Let me look."),
            call_part("get_weather", {"city": "Paris", "days": [1, 2]}, signature=SIGNATURE),
            call_part("get_time", {}),
        ),
        usage_=usage(9, 4),
    )
    out = completion_from(gemini_response(payload), "gemini-2.5-flash")
    assert_valid(without_extensions(out), "CreateChatCompletionResponse")
    (choice,) = out["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me look."
    first, second = choice["message"]["tool_calls"]
    assert first["id"].startswith("call_") and second["id"].startswith("call_") and first["id"] != second["id"]
    assert first["type"] == "function" and first["function"]["name"] == "get_weather"
    assert json.loads(first["function"]["arguments"]) == {"city": "Paris", "days": [1, 2]}
    assert base64.b64decode(first["extra_content"]["google"]["thought_signature"]) == SIGNATURE
    assert second["function"] == {"name": "get_time", "arguments": "{}"} and "extra_content" not in second


def test_tool_only_answer_has_null_content() -> None:
    out = completion_from(gemini_response(response(candidate(call_part("f", {"x": 1})))), "m")
    assert out["choices"][0]["message"]["content"] is None


def test_one_choice_per_candidate() -> None:
    payload = response(
        candidate(text_part("second"), index=1, finish="MAX_TOKENS"),
        candidate(text_part("first"), index=0),
        usage_=usage(3, 8),
    )
    out = completion_from(gemini_response(payload), "m")
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in out["choices"]] == [
        (0, "first", "stop"),
        (1, "second", "length"),
    ]
    assert_valid(out, "CreateChatCompletionResponse")


@pytest.mark.parametrize(
    "gemini, openai_reason",
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
        (None, "stop"),
    ],
)
def test_finish_reasons(gemini: str | None, openai_reason: str) -> None:
    out = completion_from(gemini_response(response(candidate(text_part("x"), finish=gemini))), "m")
    assert out["choices"][0]["finish_reason"] == openai_reason


def test_logprobs_mapping() -> None:
    result = logprobs_result([("Hi", -0.25), ("!", 0.0)], [[("Hi", -0.25), ("Hey", -1.5)], [("!", 0.0), (".", -3.0)]])
    out = completion_from(gemini_response(response(candidate(text_part("Hi!"), logprobs=result))), "m")
    assert_valid(out, "CreateChatCompletionResponse")
    assert out["choices"][0]["logprobs"] == {
        "content": [
            {
                "token": "Hi",
                "logprob": -0.25,
                "bytes": [72, 105],
                "top_logprobs": [
                    {"token": "Hi", "logprob": -0.25, "bytes": [72, 105]},
                    {"token": "Hey", "logprob": -1.5, "bytes": [72, 101, 121]},
                ],
            },
            {
                "token": "!",
                "logprob": 0.0,
                "bytes": [33],
                "top_logprobs": [
                    {"token": "!", "logprob": 0.0, "bytes": [33]},
                    {"token": ".", "logprob": -3.0, "bytes": [46]},
                ],
            },
        ],
        "refusal": None,
    }


def test_missing_usage_is_left_to_the_gateway() -> None:
    """Without usage metadata the provider reports none; the gateway counts and marks the row."""
    out = completion_from(gemini_response(response(candidate(text_part("one two three")))), "m")
    assert "usage" not in out


def test_blocked_prompt_is_a_content_filter_400() -> None:
    with pytest.raises(InvalidRequest) as exc:
        completion_from(gemini_response(blocked_response("PROHIBITED_CONTENT", "nope")), "m")
    assert (exc.value.status, exc.value.code) == (400, "content_filter")
    assert "PROHIBITED_CONTENT" in exc.value.message and "nope" in exc.value.message


def translate_stream(*payloads: dict[str, Any]) -> list[dict[str, Any]]:
    translator = StreamTranslator(p.ChunkFactory("gemini-2.5-flash"))
    out = []
    for payload in payloads:
        out.extend(translator.feed(gemini_response(payload)))
    return out + translator.finish()


def test_stream_text_chunks() -> None:
    chunks = translate_stream(
        response(candidate(text_part("pondering", thought=True), finish=None), usage_=usage(4, None, thoughts=9)),
        response(candidate(text_part("Hel"), finish=None), usage_=usage(4, 1, thoughts=9)),
        response(candidate(text_part("lo"), finish="STOP"), usage_=usage(4, 2, thoughts=9)),
    )
    for chunk in chunks:
        assert_valid(chunk, "CreateChatCompletionStreamResponse")
    assert len({c["id"] for c in chunks}) == 1
    *deltas, last = chunks
    assert [c["choices"][0]["delta"] for c in deltas] == [
        {"role": "assistant", "content": "Hel"},
        {"content": "lo"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in deltas] == [None, None, "stop"]
    # Usage is cumulative in Gemini streams: the last chunk's, never a sum.
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 11 and last["usage"]["prompt_tokens"] == 4


def test_stream_tool_call_deltas() -> None:
    chunks = translate_stream(
        response(
            candidate(
                call_part("get_weather", {"city": "Paris"}, signature=SIGNATURE),
                call_part("get_time", {}),
                finish="STOP",
            )
        ),
    )
    for chunk in chunks:
        assert_valid(without_extensions(chunk), "CreateChatCompletionStreamResponse")
    assert all(c["choices"] for c in chunks)  # no usage metadata in the answer: no usage chunk
    deltas = [c["choices"][0]["delta"] for c in chunks]
    head = deltas[0]["tool_calls"][0]
    assert deltas[0]["role"] == "assistant"
    assert head["index"] == 0 and head["id"].startswith("call_") and head["type"] == "function"
    assert head["function"] == {"name": "get_weather", "arguments": ""}
    assert base64.b64decode(head["extra_content"]["google"]["thought_signature"]) == SIGNATURE
    assert deltas[1] == {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":"Paris"}'}}]}
    assert deltas[2]["tool_calls"][0]["index"] == 1 and "extra_content" not in deltas[2]["tool_calls"][0]
    assert deltas[3] == {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 4 + ["tool_calls"]


def test_stream_several_candidates_and_unfinished_choice() -> None:
    chunks = translate_stream(
        response(candidate(text_part("a"), finish=None, index=0), candidate(text_part("b"), finish=None, index=1)),
        response(candidate(text_part("c"), finish="MAX_TOKENS", index=1)),
    )
    by_choice: dict[int, list[dict[str, Any]]] = {}
    for chunk in chunks:
        (c,) = chunk["choices"]
        by_choice.setdefault(c["index"], []).append(c)
    assert [c["delta"] for c in by_choice[0]] == [{"role": "assistant", "content": "a"}, {}]
    assert [c["finish_reason"] for c in by_choice[0]] == [None, "stop"]
    assert [c["delta"] for c in by_choice[1]] == [{"role": "assistant", "content": "b"}, {"content": "c"}, {}]
    assert [c["finish_reason"] for c in by_choice[1]] == [None, None, "length"]
    assert all(c["choices"] for c in chunks)  # no usage metadata: no usage chunk (the gateway counts)


def test_stream_logprobs_ride_on_their_chunk() -> None:
    chunks = translate_stream(response(candidate(text_part("Hi"), logprobs=logprobs_result([("Hi", -0.5)]))))
    assert chunks[0]["choices"][0]["logprobs"]["content"][0] == {
        "token": "Hi",
        "logprob": -0.5,
        "bytes": [72, 105],
        "top_logprobs": [],
    }
    assert_valid(chunks[0], "CreateChatCompletionStreamResponse")


def test_stream_blocked_prompt_raises_before_any_chunk() -> None:
    translator = StreamTranslator(p.ChunkFactory("m"))
    with pytest.raises(InvalidRequest) as exc:
        translator.feed(gemini_response(blocked_response("SAFETY")))
    assert exc.value.code == "content_filter"


# ---- error mapping and client options --------------------------------------------------------------


def api_error(code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> genai_errors.APIError:
    return genai_errors.APIError(code, body, httpx.Response(code, headers=headers or {}))


@pytest.mark.parametrize(
    "code, body, status, error_code",
    [
        (400, error(400, "INVALID_ARGUMENT", "bad field"), 400, "upstream_invalid_request"),
        (
            400,
            {
                "error": {
                    "code": 400,
                    "message": "API key not valid.",
                    "status": "INVALID_ARGUMENT",
                    "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
                }
            },
            401,
            "upstream_invalid_credential",
        ),
        (401, error(401, "UNAUTHENTICATED", "no"), 401, "upstream_invalid_credential"),
        (403, error(403, "PERMISSION_DENIED", "denied"), 403, "upstream_permission_denied"),
        (404, error(404, "NOT_FOUND", "models/x is not found"), 404, "model_not_found"),
        (429, error(429, "RESOURCE_EXHAUSTED", "quota"), 429, "rate_limit_exceeded"),
        (500, error(500, "INTERNAL", "oops"), 502, "upstream_error"),
        (503, error(503, "UNAVAILABLE", "overloaded"), 503, "upstream_overloaded"),
    ],
)
def test_api_errors_map_by_status(code: int, body: dict[str, Any], status: int, error_code: str) -> None:
    err = from_api_error(api_error(code, body), "sekrit-key")
    assert (err.status, err.code) == (status, error_code)
    assert "sekrit-key" not in err.message


def test_retry_after_from_header_or_retry_info() -> None:
    info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "16.2s"}
    assert (
        from_api_error(api_error(429, error(429, "RESOURCE_EXHAUSTED", "q", info)), None).headers["retry-after"] == "17"
    )
    assert (
        from_api_error(api_error(429, error(429, "RESOURCE_EXHAUSTED", "q"), {"retry-after": "3"}), None).headers[
            "retry-after"
        ]
        == "3"
    )


def test_credential_is_masked_in_upstream_messages() -> None:
    err = from_api_error(api_error(400, error(400, "INVALID_ARGUMENT", "key sekrit-key is odd")), "sekrit-key")
    assert "sekrit-key" not in err.message and "***" in err.message


@pytest.mark.parametrize(
    "exc, status, code",
    [
        (httpx.ReadTimeout("slow"), 504, "upstream_timeout"),
        (httpx.ConnectTimeout("slow"), 504, "upstream_timeout"),
        (httpx.ConnectError("refused"), 502, "upstream_unreachable"),
        (httpx.RemoteProtocolError("cut"), 502, "upstream_error"),
        (genai_errors.UnknownApiResponseError("junk"), 502, "upstream_error"),
    ],
)
def test_transport_failures_map_to_gateway_errors(exc: Exception, status: int, code: str) -> None:
    with pytest.raises(GatewayError) as caught, upstream_errors(None):
        raise exc
    assert (caught.value.status, caught.value.code) == (status, code)


def test_http_options_timeouts_retries_and_base_url() -> None:
    options = http_options(
        route(base_url="http://127.0.0.1:9/", connect_timeout=2.5, first_byte_timeout=20, idle_timeout=40)
    )
    assert options.base_url == "http://127.0.0.1:9"
    assert options.timeout == 45_000  # the gateway enforces first-byte and idle timeouts itself
    assert options.retry_options.attempts == 1
    assert http_options(route()).base_url is None  # the SDK then honours GOOGLE_GEMINI_BASE_URL
    pasted = http_options(route(base_url="https://generativelanguage.googleapis.com/v1beta/"))
    assert (pasted.base_url, pasted.api_version) == ("https://generativelanguage.googleapis.com", "v1beta")


def test_connect_timeout_hook_sets_only_the_connect_timeout() -> None:
    import asyncio

    request = httpx.Request(
        "POST", "http://x", extensions={"timeout": {"connect": 65, "read": 65, "write": 65, "pool": 65}}
    )
    asyncio.run(connect_timeout_hook(2.5)(request))
    assert request.extensions["timeout"] == {"connect": 2.5, "read": 65, "write": 65, "pool": 65}


# ---- end to end: the gateway, google-genai and the fake Gemini server ----------------------------------


@pytest.fixture(scope="session")
def gemini_server() -> Iterator[FakeGemini]:
    fake = FakeGemini().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(gemini_server: FakeGemini, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGemini]:
    gemini_server.reset()
    monkeypatch.setenv(KEY_ENV, "test-key")
    yield gemini_server
    gemini_server.reset()


@pytest.fixture
def gem(fake: FakeGemini, gateway: Any) -> Any:
    """The `gem` route to the fake (no gateway retries, so each scripted reply is used once)."""
    from completions.models import ModelRoute

    return ModelRoute.objects.create(
        model_name="gem",
        provider="gemini",
        upstream_model="gemini-2.5-flash",
        base_url=fake.url,
        api_key_env=KEY_ENV,
        max_retries=0,
        options={"breaker_failures": 1000},
    )


def sent(fake: FakeGemini) -> dict[str, Any]:
    """The last body the SDK sent, field names normalized."""
    return canonical(fake.requests[-1].json)


def test_e2e_exact_gemini_request(client: Any, fake: FakeGemini, gem: Any) -> None:
    fake.script(Reply(json=text_response('{"answer": "oui"}')))
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    client.chat.completions.create(
        model="gem",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "And this?"},
                    {"type": "image_url", "image_url": {"url": PNG_URL}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp"}},
                ],
            },
        ],
        temperature=0.3,
        top_p=0.9,
        seed=42,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        max_completion_tokens=256,
        stop=["END"],
        reasoning_effort="medium",
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    )
    request = fake.requests[-1]
    assert request.path == "/v1/models/gemini-2.5-flash:generateContent"
    assert request.headers["x-goog-api-key"] == "test-key"
    body = sent(fake)
    inline = body["contents"][2]["parts"][2].pop("inlineData")
    assert inline["mimeType"] == "image/png" and unb64(inline["data"]) == PNG
    assert body == {
        "contents": [
            {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
            {
                "role": "model",
                "parts": [
                    {"text": "Checking."},
                    {
                        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                        "thoughtSignature": "skip_thought_signature_validator",
                    },
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}},
                    {"text": "And this?"},
                    {},  # the inline image, checked above by its decoded bytes
                    {"fileData": {"fileUri": "https://example.com/cat.webp", "mimeType": "image/webp"}},
                ],
            },
        ],
        "systemInstruction": {"parts": [{"text": "You are terse."}, {"text": "Answer in French."}]},
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "get_weather",
                        "description": "Weather in a city",
                        "parametersJsonSchema": WEATHER_TOOL["function"]["parameters"],
                    }
                ]
            }
        ],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
        "generationConfig": {
            "temperature": 0.3,
            "topP": 0.9,
            "seed": 42,
            "presencePenalty": 0.5,
            "frequencyPenalty": 0.25,
            "maxOutputTokens": 256,
            "stopSequences": ["END"],
            "responseMimeType": "application/json",
            "responseJsonSchema": schema,
            "thinkingConfig": {"thinkingBudget": 8192},
        },
    }


def test_e2e_completion_is_spec_valid(client: Any, fake: FakeGemini, gem: Any) -> None:
    fake.script(
        Reply(
            json=response(candidate(text_part("Bonjour"), text_part(" !")), usage_=usage(12, 3, thoughts=5, cached=2))
        )
    )
    raw = client.chat.completions.with_raw_response.create(model="gem", messages=[{"role": "user", "content": "salut"}])
    body = json.loads(raw.text)
    assert_valid(body, "CreateChatCompletionResponse")
    completion = raw.parse()
    assert completion.model == "gemini-2.5-flash"
    assert completion.choices[0].message.content == "Bonjour !" and completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (
        12,
        8,
        20,
    )
    assert completion.usage.completion_tokens_details.reasoning_tokens == 5
    assert completion.usage.prompt_tokens_details.cached_tokens == 2
    (row,) = log_rows(request_id=raw.headers["x-request-id"])
    assert (row.provider, row.upstream_model, row.prompt_tokens, row.completion_tokens) == (
        "gemini",
        "gemini-2.5-flash",
        12,
        8,
    )


def test_e2e_base_url_with_api_version(client: Any, fake: FakeGemini, gateway: Any) -> None:
    from completions.models import ModelRoute

    ModelRoute.objects.create(
        model_name="gem-beta",
        provider="gemini",
        upstream_model="gemini-2.5-flash",
        base_url=fake.url + "/v1beta/",
        api_key_env=KEY_ENV,
        max_retries=0,
    )
    r = client.chat.completions.create(model="gem-beta", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "echo: hi"
    assert fake.requests[-1].path == "/v1beta/models/gemini-2.5-flash:generateContent"


def test_e2e_candidates_become_choices(client: Any, fake: FakeGemini, gem: Any) -> None:
    fake.script(
        Reply(json=response(candidate(text_part("A"), index=0), candidate(text_part("B"), index=1), usage_=usage(3, 2)))
    )
    r = client.chat.completions.create(model="gem", messages=[{"role": "user", "content": "x"}], n=2)
    assert [(c.index, c.message.content) for c in r.choices] == [(0, "A"), (1, "B")]
    assert sent(fake)["generationConfig"]["candidateCount"] == 2


def sse_payloads(response: httpx.Response) -> list[str]:
    return [event[len("data: ") :] for event in response.read().decode().split("\n\n") if event]


def test_e2e_stream_chunks_are_spec_valid(raw: httpx.Client, fake: FakeGemini, gem: Any) -> None:
    fake.script(
        Reply(
            events=[
                response(candidate(text_part("Hel"), finish=None), usage_=usage(6, 1)),
                response(candidate(text_part("lo"), finish=None), usage_=usage(6, 2)),
                response(candidate(text_part("!"), finish="STOP"), usage_=usage(6, 3, thoughts=4)),
            ]
        )
    )
    body = {
        "model": "gem",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with raw.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        payloads = sse_payloads(resp)
    assert fake.requests[-1].path == "/v1/models/gemini-2.5-flash:streamGenerateContent"
    assert fake.requests[-1].query == {"alt": ["sse"]}
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(x) for x in payloads[:-1]]
    for chunk in chunks:
        assert_valid(chunk, "CreateChatCompletionStreamResponse")
    *content, usage_chunk = chunks
    assert content[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in content) == "Hello!"
    assert [c["choices"][0]["finish_reason"] for c in content] == [None, None, None, "stop"]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 7
    assert usage_chunk["usage"]["completion_tokens_details"] == {"reasoning_tokens": 4}


def test_e2e_streaming_is_real(client: Any, fake: FakeGemini, gem: Any) -> None:
    gate = Gate()
    fake.script(
        Reply(
            events=[
                response(candidate(text_part("first"), finish=None)),
                gate,
                response(candidate(text_part(" second"), finish="STOP"), usage_=usage(2, 2)),
            ]
        )
    )
    stream = client.chat.completions.create(model="gem", messages=[{"role": "user", "content": "x"}], stream=True)
    chunks = iter(stream)
    started = time.monotonic()
    first = next(chunks)  # the fake is holding the rest behind the gate
    assert first.choices[0].delta.content == "first" and first.choices[0].delta.role == "assistant"
    assert time.monotonic() - started < 10
    gate.open()
    rest = list(chunks)
    assert "".join(c.choices[0].delta.content or "" for c in rest if c.choices) == " second"
    assert rest[-1].choices[0].finish_reason == "stop"


def test_e2e_stream_slow_chunks_are_forwarded(async_client: Any, fake: FakeGemini, gem: Any) -> None:
    import asyncio

    from tests.fakes.base import Pause

    fake.script(
        Reply(
            events=[
                response(candidate(text_part("a"), finish=None)),
                Pause(0.3),
                response(candidate(text_part("b"), finish=None)),
                Pause(0.3),
                response(candidate(text_part("c"), finish="STOP")),
            ]
        )
    )

    async def run() -> list[tuple[float, str]]:
        stream = await async_client.chat.completions.create(
            model="gem", messages=[{"role": "user", "content": "x"}], stream=True
        )
        arrivals = [(time.monotonic(), c.choices[0].delta.content or "") async for c in stream if c.choices]
        await async_client.close()
        return arrivals

    arrivals = asyncio.run(run())
    texts = [text for _, text in arrivals if text]
    times = [at for at, text in arrivals if text]
    assert texts == ["a", "b", "c"]
    assert times[1] - times[0] > 0.2 and times[2] - times[1] > 0.2  # each chunk as it came, not all at the end


def test_e2e_tool_round_trip_carries_the_signature(client: Any, fake: FakeGemini, gem: Any) -> None:
    fake.script(
        Reply(
            json=response(
                candidate(call_part("get_weather", {"city": "Paris"}, signature=SIGNATURE)), usage_=usage(20, 5)
            )
        ),
        Reply(json=text_response("It is sunny in Paris.")),
    )
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    raw = client.chat.completions.with_raw_response.create(model="gem", messages=messages, tools=[WEATHER_TOOL])
    assert_valid(without_extensions(json.loads(raw.text)), "CreateChatCompletionResponse")
    r = raw.parse()
    assert r.choices[0].finish_reason == "tool_calls"
    (call,) = r.choices[0].message.tool_calls
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert base64.b64decode(call.model_extra["extra_content"]["google"]["thought_signature"]) == SIGNATURE
    messages.append(r.choices[0].message)  # the SDK object, as users do
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"})
    r = client.chat.completions.create(model="gem", messages=messages, tools=[WEATHER_TOOL])
    assert r.choices[0].message.content == "It is sunny in Paris."
    user, model, result = sent(fake)["contents"]
    assert user == {"role": "user", "parts": [{"text": "Weather in Paris?"}]}
    (call_part_,) = model["parts"]
    assert model["role"] == "model" and call_part_["functionCall"] == {"name": "get_weather", "args": {"city": "Paris"}}
    assert decoded_signature(call_part_) == SIGNATURE
    assert result == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "sunny, 21C"}}}],
    }


def test_e2e_streamed_tool_call(raw: httpx.Client, fake: FakeGemini, gem: Any) -> None:
    fake.script(
        Reply(
            events=[
                response(candidate(call_part("get_weather", {"city": "Rome"}, signature=SIGNATURE)), usage_=usage(9, 4))
            ]
        )
    )
    body = {
        "model": "gem",
        "messages": [{"role": "user", "content": "Rome?"}],
        "tools": [WEATHER_TOOL],
        "stream": True,
        "tool_choice": "required",
    }
    with raw.stream("POST", "/v1/chat/completions", json=body) as resp:
        payloads = sse_payloads(resp)
    chunks = [json.loads(x) for x in payloads[:-1]]
    for chunk in chunks:
        assert_valid(without_extensions(chunk), "CreateChatCompletionStreamResponse")
    head = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert head["function"]["name"] == "get_weather" and head["id"].startswith("call_")
    assert base64.b64decode(head["extra_content"]["google"]["thought_signature"]) == SIGNATURE
    assert chunks[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] == '{"city":"Rome"}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert sent(fake)["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


ERROR_CASES = [
    (
        error_reply(400, "INVALID_ARGUMENT", "Invalid value at 'generation_config'"),
        openai.BadRequestError,
        400,
        "upstream_invalid_request",
    ),
    (
        error_reply(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
        openai.AuthenticationError,
        401,
        "upstream_invalid_credential",
    ),
    (
        error_reply(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."),
        openai.PermissionDeniedError,
        403,
        "upstream_permission_denied",
    ),
    (
        error_reply(404, "NOT_FOUND", "models/gemini-9 is not found for API version v1"),
        openai.NotFoundError,
        404,
        "model_not_found",
    ),
    (
        error_reply(
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded.",
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"},
        ),
        openai.RateLimitError,
        429,
        "rate_limit_exceeded",
    ),
    (
        error_reply(500, "INTERNAL", "An internal error has occurred."),
        openai.InternalServerError,
        502,
        "upstream_error",
    ),
    (
        error_reply(503, "UNAVAILABLE", "The model is overloaded."),
        openai.InternalServerError,
        503,
        "upstream_overloaded",
    ),
]
ERROR_IDS = ["400", "401", "403", "404", "429", "500", "503"]


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("reply, exc_class, status, code", ERROR_CASES, ids=ERROR_IDS)
def test_e2e_upstream_errors(
    client: Any, fake: FakeGemini, gem: Any, reply: Reply, exc_class: type, status: int, code: str, stream: bool
) -> None:
    fake.script(reply)
    with pytest.raises(exc_class) as caught:
        result = client.chat.completions.create(model="gem", messages=[{"role": "user", "content": "x"}], stream=stream)
        if stream:
            list(result)
    err = caught.value
    assert err.status_code == status and err.code == code
    assert_valid(err.response.json(), "ErrorResponse")
    assert "test-key" not in err.response.text
    if status == 429:
        assert err.response.headers["retry-after"] == "17"
    assert len(fake.requests) == 1


def test_e2e_wrong_api_key_is_an_upstream_credential_error(
    client: Any, fake: FakeGemini, gem: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from completions.models import ModelRoute

    monkeypatch.setenv("WRONG_GEMINI_KEY", "not-the-key-123")
    ModelRoute.objects.create(
        model_name="gem-bad",
        provider="gemini",
        upstream_model="gemini-2.5-flash",
        base_url=fake.url,
        api_key_env="WRONG_GEMINI_KEY",
        max_retries=0,
    )
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="gem-bad", messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "upstream_invalid_credential"
    assert "credential" in caught.value.message and "not-the-key-123" not in caught.value.response.text
    assert (
        fake.requests[-1].headers["x-goog-api-key"] == "not-the-key-123"
    )  # Gemini answered its real 400 API_KEY_INVALID


def test_e2e_missing_credential_is_a_503(client: Any, fake: FakeGemini, gateway: Any) -> None:
    from completions.models import ModelRoute

    ModelRoute.objects.create(
        model_name="gem-nokey",
        provider="gemini",
        upstream_model="gemini-2.5-flash",
        base_url=fake.url,
        api_key_env="UNSET_GEMINI_KEY_FOR_TEST",
        max_retries=0,
    )
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="gem-nokey", messages=[{"role": "user", "content": "x"}])
    assert (caught.value.status_code, caught.value.code) == (503, "upstream_credential_missing")
    assert fake.requests == []


def test_e2e_timeout_is_a_504(client: Any, fake: FakeGemini, gateway: Any) -> None:
    from completions.models import ModelRoute

    ModelRoute.objects.create(
        model_name="gem-slow",
        provider="gemini",
        upstream_model="gemini-2.5-flash",
        base_url=fake.url,
        api_key_env=KEY_ENV,
        max_retries=0,
        first_byte_timeout=0.5,
        idle_timeout=0.5,
    )
    fake.script(Reply(json=text_response("late"), delay=3))
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="gem-slow", messages=[{"role": "user", "content": "x"}])
    assert (caught.value.status_code, caught.value.code) == (504, "upstream_timeout")
    assert time.monotonic() - started < 2.5


def test_e2e_unreachable_upstream_is_a_502(client: Any, fake: FakeGemini, gateway: Any) -> None:
    from completions.models import ModelRoute
    from tests.conftest import free_port

    ModelRoute.objects.create(
        model_name="gem-down",
        provider="gemini",
        upstream_model="gemini-2.5-flash",
        base_url=f"http://127.0.0.1:{free_port()}",
        api_key_env=KEY_ENV,
        max_retries=0,
    )
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="gem-down", messages=[{"role": "user", "content": "x"}])
    assert (caught.value.status_code, caught.value.code) == (502, "upstream_unreachable")


def test_e2e_blocked_prompt(client: Any, fake: FakeGemini, gem: Any) -> None:
    fake.script(Reply(json=blocked_response("SAFETY")), Reply(events=[blocked_response("BLOCKLIST")]))
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            result = client.chat.completions.create(
                model="gem", messages=[{"role": "user", "content": "x"}], stream=stream
            )
            if stream:
                list(result)
        assert caught.value.code == "content_filter"
        assert ("BLOCKLIST" if stream else "SAFETY") in caught.value.message


def test_e2e_unsupported_parameter_never_reaches_gemini(client: Any, fake: FakeGemini, gem: Any) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gem", messages=[{"role": "user", "content": "x"}], logit_bias={"1": 5})
    assert (caught.value.code, caught.value.param) == ("unsupported_parameter", "logit_bias")
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="gem",
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/pic"}}]}
            ],
        )
    assert caught.value.param == "messages[0].content[0].image_url.url"
    assert fake.requests == []


@pytest.mark.parametrize("failure", ["error_event", "drop"])
def test_e2e_failure_after_stream_started(raw: httpx.Client, fake: FakeGemini, gem: Any, failure: str) -> None:
    tail: Any = (
        {"error": {"code": 500, "message": "backend died", "status": "INTERNAL"}} if failure == "error_event" else DROP
    )
    fake.script(Reply(events=[response(candidate(text_part("partial"), finish=None)), tail]))
    body = {"model": "gem", "messages": [{"role": "user", "content": "x"}], "stream": True}
    with raw.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        payloads = sse_payloads(resp)
    first, err, done = payloads
    assert json.loads(first)["choices"][0]["delta"]["content"] == "partial"
    assert_valid(json.loads(err), "ErrorResponse")
    assert json.loads(err)["error"]["code"] == "upstream_error"
    assert done == "[DONE]"
    (row,) = log_rows(request_id=resp.headers["x-request-id"])
    assert row.error_code == "upstream_error" and row.stream


def test_e2e_client_disconnect_closes_the_upstream_stream(client: Any, fake: FakeGemini, gem: Any) -> None:
    gate = Gate()
    fake.script(
        Reply(
            events=[response(candidate(text_part("first"), finish=None)), gate, response(candidate(text_part("never")))]
        )
    )
    with client.chat.completions.with_streaming_response.create(
        model="gem", messages=[{"role": "user", "content": "x"}], stream=True
    ) as resp:
        request_id = resp.headers["x-request-id"]
        first = next(iter(resp.parse()))
        assert first.choices[0].delta.content == "first"
    # The client is gone; the gateway must hang up on Gemini (not wait for the gate).
    deadline = time.monotonic() + 10
    while fake.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.disconnects == 1
    gate.open()
    deadline = time.monotonic() + 10
    rows: list[Any] = []
    while not rows and time.monotonic() < deadline:
        rows = log_rows(request_id=request_id)
        time.sleep(0.05)
    (row,) = rows
    assert row.client_disconnected and row.provider == "gemini"


def test_closing_the_stream_between_chunks_hangs_up_at_once(fake: FakeGemini) -> None:
    """Closed while suspended at a yield (the client left while the gateway was writing), the
    provider cuts the HTTP response itself instead of waiting for the garbage collector."""
    import asyncio

    gate = Gate()
    fake.script(
        Reply(
            events=[response(candidate(text_part("first"), finish=None)), gate, response(candidate(text_part("never")))]
        )
    )
    provider = GeminiProvider(route(base_url=fake.url))

    async def run() -> int:
        stream = provider.stream(chat(stream=True))
        first = await stream.__anext__()
        assert first["choices"][0]["delta"]["content"] == "first"
        await stream.aclose()
        for _ in range(50):
            if fake.disconnects:
                break
            await asyncio.sleep(0.01)
        await provider.aclose()
        return fake.disconnects

    try:
        assert asyncio.run(run()) == 1
    finally:
        gate.open()


def test_e2e_builtin_routes_follow_gemini_api_key(
    client: Any, fake: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    from completions.app import current

    router = current().router
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake.url)
    router.invalidate()
    assert "gemini-2.5-flash" in {m.id for m in client.models.list()}
    r = client.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "hello there"}])
    assert r.choices[0].message.content == "echo: hello there"
    assert fake.requests[-1].path == "/v1/models/gemini-2.5-flash:generateContent"
    assert fake.requests[-1].headers["x-goog-api-key"] == "test-key"

    monkeypatch.delenv("GEMINI_API_KEY")
    router.invalidate()
    assert "gemini-2.5-flash" not in {m.id for m in client.models.list()}
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "hello"}])
    assert caught.value.code == "model_not_found"


def test_e2e_embeddings(client: Any, fake: FakeGemini, gateway: Any) -> None:
    from completions.models import ModelRoute

    ModelRoute.objects.create(
        model_name="gem-embed",
        provider="gemini",
        upstream_model="gemini-embedding-001",
        base_url=fake.url,
        api_key_env=KEY_ENV,
        max_retries=0,
    )
    fake.script(
        Reply(json=embed_response([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]], prompt_tokens=5)),
        Reply(json=embed_response([[1.0, 1.0, 1.0]])),
    )
    raw = client.embeddings.with_raw_response.create(
        model="gem-embed", input=["hello world", "bye"], dimensions=3, encoding_format="float"
    )
    body = json.loads(raw.text)
    assert_valid(body, "CreateEmbeddingResponse")
    assert [d["embedding"] for d in body["data"]] == [[0.6, 0.8, 0.0], [0.0, 0.0, 1.0]]  # unit length, as OpenAI's
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    request = fake.requests[-1]
    assert request.path == "/v1/models/gemini-embedding-001:batchEmbedContents"
    assert [(r["content"]["parts"], r["outputDimensionality"]) for r in canonical(request.json)["requests"]] == [
        ([{"text": "hello world"}], 3),
        ([{"text": "bye"}], 3),
    ]
    # Without a token count from Gemini, the gateway counts; the SDK's default base64 round-trips.
    result = client.embeddings.create(model="gem-embed", input="one two three")
    assert result.usage.prompt_tokens == 3
    assert result.data[0].embedding == pytest.approx([3**-0.5] * 3, rel=1e-6)
