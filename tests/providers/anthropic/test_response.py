"""Anthropic, Anthropic message or stream events -> OpenAI response or chunks: pure translation, no network."""

from __future__ import annotations

import json
from typing import Any

import pytest

from completions import protocol as p
from completions.errors import UpstreamError
from completions.providers.anthropic import StreamTranslator, convert_message
from tests.fakes.anthropic import message, redacted_thinking, stream_events, text, thinking, tool_use, usage
from tests.openapi import assert_valid, without_extensions


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
    return [*chunks, *translator.finish()]


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
        translator.finish()
    assert exc.value.code == "upstream_incomplete_stream"
