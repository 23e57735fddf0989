"""Gemini, OpenAI request -> Gemini request: pure translation, no network."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from google.genai import types

from completions.errors import InvalidRequest
from completions.providers.gemini import SKIP_SIGNATURE, CallRules, GeminiProvider, to_gemini
from tests.providers.gemini.helpers import PNG, PNG_URL, SIGNATURE, WEATHER_TOOL, b64, chat, route, wire


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
def test_prepare_rejects_what_gemini_cannot_honour(params: dict[str, Any], param: str) -> None:
    provider = GeminiProvider(route())
    with pytest.raises(InvalidRequest) as exc:
        provider.prepare(chat(**params))
    assert (exc.value.param, exc.value.code, exc.value.status) == (param, "unsupported_parameter", 400)
    assert "gemini" in exc.value.message.lower()  # the message says which provider can't honour it


def test_prepare_accepts_what_gemini_honours() -> None:
    GeminiProvider(route()).prepare(
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


@pytest.mark.parametrize(
    "params, rules",
    [
        ({}, CallRules(declared=frozenset(), one_call=False)),
        ({"tools": [WEATHER_TOOL]}, CallRules(declared=frozenset({"get_weather"}), one_call=False)),
        ({"tools": [WEATHER_TOOL], "parallel_tool_calls": True}, CallRules(frozenset({"get_weather"}), False)),
        ({"tools": [WEATHER_TOOL], "parallel_tool_calls": False}, CallRules(frozenset({"get_weather"}), True)),
    ],
)
def test_prepare_holds_the_answer_to_the_declared_functions_and_parallel_tool_calls(
    params: dict[str, Any], rules: CallRules
) -> None:
    """`parallel_tool_calls: false` has no Gemini setting: it is honoured on the answer (first call kept)."""
    prepared = GeminiProvider(route()).prepare(chat(**params))
    assert prepared.payload.calls == rules
    assert "tool_config" not in prepared.payload.config.model_dump(exclude_none=True)
