"""The pure translation between Anthropic's Messages API and the chat steps, without a network."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from completions import protocol as p
from completions.errors import GatewayError, InvalidRequest, QuotaExceeded, ServiceUnavailable
from completions.messages import envelope
from completions.messages import protocol as m
from completions.messages.translate import (
    MessagesSSE,
    split_tool_use_id,
    to_chat,
    to_message,
    tool_use_id,
)

WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
PNG = "iVBORw0KGgo="
USAGE_ZERO = {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def request(**body: Any) -> m.MessagesRequest:
    base = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    return p.validate(m.MessagesRequest, {**base, **body})


def chat_body(**body: Any) -> dict[str, Any]:
    translated = to_chat(request(**body))
    assert translated.problems == []
    return translated.chat.model_dump(exclude_none=True, by_alias=True)


def problems(**body: Any) -> list[str]:
    return [problem.param for problem in to_chat(request(**body)).problems]


def rejection(model: type[p.Wire] = m.MessagesRequest, **body: Any) -> InvalidRequest:
    base = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(InvalidRequest) as exc:
        p.validate(model, {**base, **body})
    return exc.value


# ---- validation ----------------------------------------------------------------------------------


def test_max_tokens_is_required_as_anthropic_requires() -> None:
    with pytest.raises(InvalidRequest) as exc:
        p.validate(m.MessagesRequest, {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert exc.value.param == "max_tokens"


def test_unknown_parameter_and_bad_values_name_the_field() -> None:
    assert rejection(frequency_penalty=1).param == "frequency_penalty"
    assert rejection(temperature=1.5).param == "temperature"
    assert rejection(thinking={"type": "enabled", "budget_tokens": 500}).param == "thinking.budget_tokens"
    too_big = rejection(thinking={"type": "enabled", "budget_tokens": 2000})
    assert too_big.param == "thinking.budget_tokens" and "less than max_tokens" in too_big.message
    named = rejection(tools=[WEATHER], tool_choice={"type": "tool", "name": "nope"})
    assert named.param == "tool_choice.name"
    image = rejection(
        messages=[
            {
                "role": "user",
                "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": PNG}}],
            }
        ]
    )
    assert image.param == "messages[0].content[0].source.media_type"


def test_everything_claude_code_sends_is_accepted() -> None:
    body = {
        "model": "some-model",
        "max_tokens": 32000,
        "stream": True,
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "metadata": {"user_id": orjson.dumps({"device_id": "d", "session_id": "s"}).decode()},
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332"},
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Tone and style.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "say hi", "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": "<env>Working directory: /tmp</env>"},
        ],
        "tools": [
            {**WEATHER, "cache_control": {"type": "ephemeral"}},
            {**WEATHER, "name": "ToolSearch", "defer_loading": True},
        ],
    }
    req = p.validate(m.MessagesRequest, body)
    translated = to_chat(req)
    assert translated.problems == []
    chat = translated.chat
    assert [type(msg).__name__ for msg in chat.messages] == ["SystemMessage", "UserMessage", "SystemMessage"]
    assert chat.messages[0].content.startswith("x-anthropic-billing-header")
    assert chat.messages[0].content.endswith("Tone and style.")
    assert chat.messages[2].content == "<env>Working directory: /tmp</env>"
    assert chat.reasoning_effort == "high" and chat.max_tokens == 32000 and chat.stream is True
    assert chat.user == body["metadata"]["user_id"]
    assert [t.function.name for t in chat.tools] == ["get_weather", "ToolSearch"]


# ---- requests ------------------------------------------------------------------------------------


def test_system_string_and_blocks() -> None:
    assert chat_body(system="Be brief.")["messages"][0] == {"role": "system", "content": "Be brief."}
    cached = {"type": "ephemeral"}
    blocks = [{"type": "text", "text": "One."}, {"type": "text", "text": "Two.", "cache_control": cached}]
    assert chat_body(system=blocks)["messages"][0] == {"role": "system", "content": "One.\n\nTwo."}


def test_images_documents_and_text_blocks() -> None:
    content = [
        {"type": "text", "text": "Look:"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
        {"type": "document", "title": "Notes", "source": {"type": "text", "media_type": "text/plain", "data": "abc"}},
    ]
    (user,) = chat_body(messages=[{"role": "user", "content": content}])["messages"]
    assert user["content"] == [
        {"type": "text", "text": "Look:"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "auto"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "auto"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}},
        {"type": "text", "text": "Notes\n\nabc"},
    ]


def tool_history(*results: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Two calls.", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
            ],
        },
        {"role": "user", "content": list(results)},
    ]


def test_tool_round_trip_history() -> None:
    messages = tool_history(
        {"type": "text", "text": "Thanks."},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny", "cache_control": {"type": "ephemeral"}},
        {
            "type": "tool_result",
            "tool_use_id": "toolu_2",
            "is_error": True,
            "content": [{"type": "text", "text": "timeout"}],
        },
    )
    body = chat_body(messages=messages, tools=[WEATHER])
    _, assistant, paris, rome, after = body["messages"]
    assert assistant == {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
        ],
    }
    assert paris == {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}
    assert rome == {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: timeout"}
    assert after == {"role": "user", "content": "Thanks."}  # after the results, as chat requires
    assert body["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]


def test_a_repeated_tool_result_counts_once() -> None:
    messages = tool_history(
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "rain"},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny again"},
    )
    tool_messages = [msg for msg in chat_body(messages=messages)["messages"] if msg["role"] == "tool"]
    assert [(t["tool_call_id"], t["content"]) for t in tool_messages] == [("toolu_1", "sunny"), ("toolu_2", "rain")]


def test_a_tool_result_without_its_call_is_refused_by_name() -> None:
    messages = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "x"}]}]
    assert problems(messages=messages) == ["messages[0].content[0].tool_use_id"]


def test_images_in_tool_results_follow_as_user_content() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    messages = tool_history(
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "shot"}, image]},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": ""},
    )
    last = chat_body(messages=messages)["messages"][-1]
    assert last["role"] == "user" and last["content"][0]["type"] == "image_url"


def test_tool_choice_and_parallel_use() -> None:
    assert chat_body(tools=[WEATHER], tool_choice={"type": "auto"})["tool_choice"] == "auto"
    any_one = chat_body(tools=[WEATHER], tool_choice={"type": "any", "disable_parallel_tool_use": True})
    assert any_one["tool_choice"] == "required" and any_one["parallel_tool_calls"] is False
    named = chat_body(tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"})["tool_choice"]
    assert named == {"type": "function", "function": {"name": "get_weather"}}
    assert chat_body(tools=[WEATHER], tool_choice={"type": "none"})["tool_choice"] == "none"


@pytest.mark.parametrize(
    ("thinking", "output_config", "effort"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, None, "low"),
        ({"type": "enabled", "budget_tokens": 8000}, None, "medium"),
        ({"type": "enabled", "budget_tokens": 20000}, None, "high"),
        ({"type": "adaptive"}, {"effort": "max"}, "max"),
        ({"type": "disabled"}, {"effort": "high"}, None),
        (None, {"effort": "low"}, "low"),
        ({"type": "adaptive"}, None, None),
    ],
)
def test_thinking_and_effort_become_reasoning_effort(thinking: Any, output_config: Any, effort: str | None) -> None:
    body: dict[str, Any] = {"max_tokens": 32000}
    if thinking is not None:
        body["thinking"] = thinking
    if output_config is not None:
        body["output_config"] = output_config
    assert chat_body(**body).get("reasoning_effort") == effort


def test_options() -> None:
    body = chat_body(
        stop_sequences=["END"],
        temperature=0.5,
        top_p=0.9,
        metadata={"user_id": "u-1"},
        service_tier="standard_only",
        output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}},
        context_management={"edits": []},
        cache_control={"type": "ephemeral"},
        speed="standard",
    )
    assert (body["stop"], body["temperature"], body["top_p"], body["user"]) == (["END"], 0.5, 0.9, "u-1")
    assert body["service_tier"] == "default"
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}


def test_what_only_anthropic_honours_is_named() -> None:
    assert problems(top_k=5) == ["top_k"]
    assert problems(max_tokens=0) == ["max_tokens"]
    assert problems(stop_sequences=["a", "b", "c", "d", "e"]) == ["stop_sequences"]
    assert problems(tools=[{"type": "web_search_20250305", "name": "web_search"}]) == ["tools[0].type"]
    assert problems(tools=[{**WEATHER, "name": "x" * 65}]) == ["tools[0].name"]
    assert problems(mcp_servers=[{"type": "url", "url": "https://mcp.example", "name": "x"}]) == ["mcp_servers"]
    file_image = {"type": "image", "source": {"type": "file", "file_id": "file_1"}}
    assert problems(messages=[{"role": "user", "content": [file_image]}]) == ["messages[0].content[0].source"]
    server = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
    assert problems(messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": [server]}]) == [
        "messages[1].content[0].type"
    ]
    error = to_chat(request(top_k=5)).problems[0].error()
    assert error.status == 400 and error.message.startswith("top_k:")


def test_a_provider_refusal_is_reworded_to_the_messages_field() -> None:
    translated = to_chat(request(tools=[WEATHER], tool_choice={"type": "auto", "disable_parallel_tool_use": True}))
    reworded = translated.reword(InvalidRequest("not supported", param="parallel_tool_calls"))
    assert reworded.param == "tool_choice.disable_parallel_tool_use"
    assert reworded.message == "tool_choice.disable_parallel_tool_use: not supported"
    effort = to_chat(request(output_config={"effort": "max"}))
    assert effort.reword(InvalidRequest("no", param="reasoning_effort")).param == "output_config.effort"
    turns = to_chat(request(system="s", messages=[{"role": "user", "content": "a"}]))
    assert turns.reword(InvalidRequest("bad", param="messages[1].content")).param == "messages[0]"


def test_tool_ids_carry_provider_extras_both_ways() -> None:
    extra = {"google": {"thought_signature": "c2ln"}}
    packed = tool_use_id("call_abc", extra)
    assert packed.startswith("call_abc__gw_") and split_tool_use_id(packed) == ("call_abc", extra)
    assert split_tool_use_id("toolu_plain") == ("toolu_plain", None)
    assert tool_use_id("call_abc") == "call_abc"
    messages = [
        {"role": "user", "content": "Paris"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": packed, "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": packed, "content": "sunny"}]},
    ]
    body = chat_body(messages=messages, tools=[WEATHER])
    assert body["messages"][1]["tool_calls"][0]["id"] == "call_abc"
    assert body["messages"][1]["tool_calls"][0]["extra_content"] == extra
    assert body["messages"][2]["tool_call_id"] == "call_abc"


# ---- answers -------------------------------------------------------------------------------------


def answer(message: dict[str, Any], finish: str = "stop", **usage_extra: Any) -> dict[str, Any]:
    usage = {**p.usage(12, 5), **usage_extra}
    return p.completion("chatcmpl-1", 1, "upstream-x", [p.choice(0, message, finish)], usage)


def test_answer_with_text_and_tool_calls() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        "extra_content": {"google": {"thought_signature": "c2ln"}},
    }
    msg = to_message(answer(p.message("Let me check.", tool_calls=[call]), "tool_calls"), [])
    assert msg["id"].startswith("msg_") and msg["type"] == "message" and msg["role"] == "assistant"
    assert msg["model"] == "upstream-x" and msg["stop_reason"] == "tool_use" and msg["stop_sequence"] is None
    text, tool = msg["content"]
    assert text == {"type": "text", "text": "Let me check."}
    assert tool["type"] == "tool_use" and tool["name"] == "get_weather" and tool["input"] == {"city": "Paris"}
    assert split_tool_use_id(tool["id"]) == ("call_1", call["extra_content"])
    assert msg["usage"] == {
        "input_tokens": 12,
        "output_tokens": 5,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


@pytest.mark.parametrize(
    ("finish", "reason"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal")],
)
def test_stop_reasons(finish: str, reason: str) -> None:
    assert to_message(answer(p.message("x"), finish), [])["stop_reason"] == reason


def test_stop_sequence_when_the_upstream_names_it_and_cached_tokens() -> None:
    body = answer(p.message("x"), "stop", prompt_tokens_details={"cached_tokens": 10})
    body["choices"][0]["stop_reason"] = "END"
    msg = to_message(body, ["END"])
    assert (msg["stop_reason"], msg["stop_sequence"]) == ("stop_sequence", "END")
    assert (msg["usage"]["input_tokens"], msg["usage"]["cache_read_input_tokens"]) == (2, 10)


def test_reasoning_content_becomes_a_thinking_block() -> None:
    message = {**p.message("Answer."), "reasoning_content": "Hmm."}
    thinking, text = to_message(answer(message), [])["content"]
    assert thinking == {"type": "thinking", "thinking": "Hmm.", "signature": ""}
    assert text == {"type": "text", "text": "Answer."}


def test_tool_arguments_that_are_not_an_object_are_an_upstream_error() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1"}}
    with pytest.raises(GatewayError) as exc:
        to_message(answer(p.message(None, tool_calls=[call]), "tool_calls"), [])
    assert exc.value.status == 502


# ---- streams -------------------------------------------------------------------------------------


def events(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in data.decode().split("\n\n"):
        if not frame:
            continue
        name_line, data_line = frame.split("\n")
        name, payload = name_line.removeprefix("event: "), orjson.loads(data_line.removeprefix("data: "))
        assert name == payload["type"]  # every event: line matches its data's type
        out.append((name, payload))
    return out


def test_stream_of_thinking_text_and_tool_calls() -> None:
    factory = p.ChunkFactory("upstream-x")
    head = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    chunks = [
        factory.delta(0, {"role": "assistant", "reasoning_content": "Think"}),
        factory.delta(0, {"content": "Hel"}),
        factory.delta(0, {"content": "lo"}),
        factory.delta(0, {"tool_calls": [head]}),
        factory.delta(0, {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        factory.delta(0, {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        factory.delta(0, {}, finish_reason="tool_calls"),
        factory.usage(p.usage(20, 7)),
    ]
    dialect = MessagesSSE("upstream-x", 18, [])
    wire = b"".join(filter(None, (dialect.chunk(c) for c in chunks))) + dialect.end(20, 7, False)
    got = events(wire)
    assert [name for name, _ in got] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = got[0][1]["message"]
    assert start["usage"]["input_tokens"] == 18 and start["content"] == [] and start["stop_reason"] is None
    assert got[2][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
    }
    assert got[3][1]["delta"] == {"type": "thinking_delta", "thinking": "Think"}
    assert got[6][1] == {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hel"}}
    assert got[9][1]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}
    assert got[10][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"city":'}
    assert got[13][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {**USAGE_ZERO, "input_tokens": 20, "output_tokens": 7},
    }


def test_an_empty_stream_still_has_a_content_block() -> None:
    dialect = MessagesSSE("m", 3, [])
    wire = (dialect.chunk(p.ChunkFactory("m").delta(0, {"role": "assistant", "content": ""})) or b"") + dialect.end(
        3, 0, True
    )
    names = [name for name, _ in events(wire)]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_a_failure_mid_stream_is_an_error_event() -> None:
    ((name, payload),) = events(MessagesSSE("m", 1, []).error(ServiceUnavailable("busy")))
    assert name == "error" and payload == {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}


# ---- the error envelope --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "anthropic_status", "kind"),
    [
        (400, 400, "invalid_request_error"),
        (401, 401, "authentication_error"),
        (403, 403, "permission_error"),
        (404, 404, "not_found_error"),
        (413, 413, "request_too_large"),
        (429, 429, "rate_limit_error"),
        (500, 500, "api_error"),
        (502, 502, "api_error"),
        (503, 529, "overloaded_error"),
        (504, 504, "timeout_error"),
    ],
)
def test_statuses_and_types(status: int, anthropic_status: int, kind: str) -> None:
    response = envelope.render(GatewayError("boom", status=status), "req_1")
    assert response.status_code == anthropic_status
    assert orjson.loads(response.content) == {
        "type": "error",
        "error": {"type": kind, "message": "boom"},
        "request_id": "req_1",
    }
    assert response["request-id"] == "req_1"


def test_budget_errors_keep_their_headers() -> None:
    response = envelope.render(QuotaExceeded("spent", headers={"x-should-retry": "false"}))
    assert response.status_code == 429 and response["x-should-retry"] == "false"
