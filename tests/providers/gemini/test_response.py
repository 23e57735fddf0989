"""Gemini, Gemini answer or stream chunk -> OpenAI response or chunks: pure translation, no network."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from completions import protocol as p
from completions.errors import InvalidRequest, UpstreamError
from completions.providers.gemini import CallRules, StreamTranslator, completion_from
from tests.fakes.gemini import blocked_response, call_part, candidate, logprobs_result, response, text_part, usage
from tests.openapi import assert_valid, without_extensions
from tests.providers.gemini.helpers import SIGNATURE, gemini_response


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


# ---- the answer's function calls: only declared functions; one call with parallel_tool_calls false ----

TWO_CALLS = response(
    candidate(
        call_part("get_weather", {"city": "Paris"}, signature=SIGNATURE), call_part("get_weather", {"city": "Rome"})
    )
)
ONE_CALL = CallRules(declared=frozenset({"get_weather"}), one_call=True)


def test_parallel_tool_calls_false_keeps_the_first_call_and_says_so() -> None:
    notes: dict[str, str] = {}
    out = completion_from(gemini_response(TWO_CALLS), "m", ONE_CALL, notes)
    assert_valid(without_extensions(out), "CreateChatCompletionResponse")
    (call,) = out["choices"][0]["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"} and "extra_content" in call
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert notes == {"x-gateway-tool-calls-dropped": "1"}
    notes.clear()
    out = completion_from(gemini_response(TWO_CALLS), "m", CallRules(declared=frozenset({"get_weather"})), notes)
    assert len(out["choices"][0]["message"]["tool_calls"]) == 2 and notes == {}


def test_stream_keeps_the_first_call_across_chunks() -> None:
    notes: dict[str, str] = {}
    translator = StreamTranslator(p.ChunkFactory("m"), rules=ONE_CALL, notes=notes)
    first = translator.feed(
        gemini_response(response(candidate(call_part("get_weather", {"city": "Paris"}), finish=None)))
    )
    later = translator.feed(gemini_response(response(candidate(call_part("get_weather", {"city": "Rome"})))))
    calls = [tc for c in first + later for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert [tc["index"] for tc in calls] == [0, 0] and "Rome" not in json.dumps(calls)
    assert later[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert notes == {"x-gateway-tool-calls-dropped": "1"}


@pytest.mark.parametrize("declared", [frozenset({"lookup"}), frozenset()])
def test_a_call_to_an_undeclared_function_is_a_502(declared: frozenset[str]) -> None:
    rules = CallRules(declared=declared)
    with pytest.raises(UpstreamError) as exc:
        completion_from(gemini_response(TWO_CALLS), "m", rules)
    assert (exc.value.status, exc.value.code) == (502, "upstream_undeclared_tool_call")
    assert "`get_weather`" in exc.value.message
    with pytest.raises(UpstreamError):
        StreamTranslator(p.ChunkFactory("m"), rules=rules).feed(gemini_response(TWO_CALLS))
