"""The request models cover the spec's request schemas exactly, and bad input names its parameter."""

from __future__ import annotations

from typing import Any

import pytest

from completions import protocol as p
from completions.errors import InvalidRequest
from tests.openapi import resolved_properties

PAIRS = [
    ("CreateChatCompletionRequest", p.ChatCompletionRequest),
    ("ChatCompletionRequestSystemMessage", p.SystemMessage),
    ("ChatCompletionRequestDeveloperMessage", p.DeveloperMessage),
    ("ChatCompletionRequestUserMessage", p.UserMessage),
    ("ChatCompletionRequestAssistantMessage", p.AssistantMessage),
    ("ChatCompletionRequestToolMessage", p.ToolMessage),
    ("ChatCompletionRequestFunctionMessage", p.FunctionMessage),
    ("ChatCompletionRequestMessageContentPartText", p.TextPart),
    ("ChatCompletionRequestMessageContentPartImage", p.ImagePart),
    ("ChatCompletionRequestMessageContentPartAudio", p.AudioPart),
    ("ChatCompletionRequestMessageContentPartFile", p.FilePart),
    ("ChatCompletionRequestMessageContentPartRefusal", p.RefusalPart),
    ("ChatCompletionMessageToolCall", p.FunctionToolCall),
    ("ChatCompletionMessageCustomToolCall", p.CustomToolCall),
    ("ChatCompletionTool", p.FunctionTool),
    ("FunctionObject", p.FunctionDefinition),
    ("CustomToolChatCompletions", p.CustomTool),
    ("ChatCompletionNamedToolChoice", p.NamedToolChoice),
    ("ChatCompletionAllowedToolsChoice", p.AllowedToolsChoice),
    ("ResponseFormatJsonSchema", p.ResponseFormatJsonSchema),
    ("ChatCompletionStreamOptions", p.StreamOptions),
    ("PredictionContent", p.Prediction),
    ("CreateEmbeddingRequest", p.EmbeddingRequest),
]
# Fields we accept beyond the spec, on purpose: response fields clients echo back, Google's extension.
EXTENSIONS = {p.AssistantMessage: {"annotations"}, p.FunctionToolCall: {"extra_content"}}


def field_names(model: type[p.Wire]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


@pytest.mark.parametrize(("schema", "model"), PAIRS, ids=[s for s, _ in PAIRS])
def test_models_cover_spec_properties(schema: str, model: type[p.Wire]) -> None:
    spec_props = set(resolved_properties(schema))
    ours = field_names(model) - EXTENSIONS.get(model, set())
    assert spec_props - ours == set(), "documented but not accepted"
    assert ours - spec_props == set(), "accepted but not documented"


def valid(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}


def test_full_request_round_trip() -> None:
    body = valid(
        messages=[
            {"role": "developer", "content": [{"type": "text", "text": "rules"}]},
            {"role": "system", "content": "sys"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
                "name": "u",
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{}"},
                        "extra_content": {"google": {"thought_signature": "c2ln"}},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        ],
        temperature=0.5,
        top_p=1,
        n=2,
        stop=["x"],
        max_completion_tokens=10,
        presence_penalty=1,
        frequency_penalty=-1,
        logit_bias={"50256": -100},
        logprobs=True,
        top_logprobs=2,
        seed=1,
        user="u",
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}},
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        tool_choice={"type": "function", "function": {"name": "f"}},
        parallel_tool_calls=False,
        stream=True,
        stream_options={"include_usage": True},
        metadata={"k": "v"},
        reasoning_effort="low",
        service_tier="auto",
    )
    request = p.validate(p.ChatCompletionRequest, body)
    assert (
        request.output_limit == 10
        and request.stop_sequences == ["x"]
        and request.include_usage
        and request.choices == 2
    )
    assert request.response_format.json_schema.schema_ == {"type": "object"}
    assert request.messages[3].tool_calls[0].extra_content == {"google": {"thought_signature": "c2ln"}}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (valid(temperature="0.5"), "temperature"),  # strict JSON types: no string coercion
        (valid(max_tokens=1.5), "max_tokens"),
        (valid(stream="yes"), "stream"),
        (valid(metadata={f"k{i}": "v" for i in range(17)}), "metadata"),
        (valid(tools=[{"type": "function", "function": {"name": "bad name"}}]), "tools[0].function.name"),
        (
            valid(
                tools=[{"type": "function", "function": {"name": "f"}}],
                tool_choice={"type": "function", "function": {"name": "g"}},
            ),
            "tool_choice",
        ),
        (valid(messages=[{"role": "assistant"}]), "messages[0]"),
        (
            valid(
                messages=[
                    {"role": "assistant", "tool_calls": [{"id": "x", "type": "function", "function": {"name": "f"}}]}
                ]
            ),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (valid(parallel_tool_calls=True), "parallel_tool_calls"),
    ],
)
def test_invalid_requests_name_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        p.validate(p.ChatCompletionRequest, body)
    assert exc.value.param == param and exc.value.status == 400


# ---- fields clients send inside messages ---------------------------------------------------------

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}


def chat(*messages: dict[str, Any]) -> p.ChatCompletionRequest:
    return p.validate(p.ChatCompletionRequest, {"model": "m", "messages": list(messages)})


@pytest.mark.parametrize(
    ("role", "field"),
    [(role, field) for role, fields in p.TOLERATED_MESSAGE_FIELDS.items() for field in fields],
)
def test_each_tolerated_message_field_is_accepted_and_dropped(role: str, field: str) -> None:
    message: dict[str, Any] = {"role": role, "content": "x", field: "sent by a client"}
    if role == "tool":
        message["tool_call_id"] = "call_1"
    request = chat({"role": "user", "content": "hi"}, message)
    assert field not in request.messages[1].model_dump(exclude_unset=True)


def test_the_openai_sdks_parsed_message_echoed_back_is_accepted() -> None:
    """`client.chat.completions.parse()` answers a ParsedChatCompletionMessage; appended to the history as
    the SDK's docs show, it carries `parsed` and each call's `function.parsed_arguments`."""
    call = {**CALL, "function": {**CALL["function"], "parsed_arguments": {"city": "Paris"}}}
    request = chat(
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "parsed": None, "tool_calls": [call]},
    )
    sent = request.messages[1].model_dump(exclude_unset=True)
    assert "parsed" not in sent and sent["tool_calls"][0]["function"] == CALL["function"]


def test_langchain_js_tool_results_with_a_name_are_accepted() -> None:
    request = chat(
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{**CALL, "index": 0}]},
        {"role": "tool", "content": "sunny", "name": "get_weather", "tool_call_id": "call_1"},
    )
    assert request.messages[2].tool_call_id == "call_1"
    assert request.messages[1].tool_calls[0].id == "call_1"


def test_cache_control_on_a_part_maps_to_a_prompt_cache_breakpoint() -> None:
    part = {"type": "text", "text": "long context", "cache_control": {"type": "ephemeral"}}
    request = chat({"role": "user", "content": [part]})
    assert request.messages[0].content[0].prompt_cache_breakpoint == p.CacheBreakpoint(mode="explicit")


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "user", "content": "x", "nmae": "typo"}, "messages[0].nmae"),
        ({"role": "tool", "content": "x", "tool_call_id": "c", "reasoning": "no"}, "messages[0].reasoning"),
        ({"role": "user", "content": "x", "name": "ok", "tool_call_id": "c"}, "messages[0].tool_call_id"),
    ],
)
def test_other_unknown_message_fields_are_still_a_400_naming_them(message: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        chat(message)
    assert caught.value.param == param
