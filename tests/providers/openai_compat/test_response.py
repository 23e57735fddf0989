"""OpenAI-compatible, upstream SSE bytes and JSON -> OpenAI chunks: pure, no network."""

from __future__ import annotations

import random

import pytest

from completions.providers.openai_compat import SSEDecoder, StreamTranslator, completion_to_chunks
from completions.tokens import count_response
from tests.fakes.openai_server import DONE, MODEL, USAGE, chunk, completion, text_events, usage_chunk
from tests.openapi import assert_valid
from tests.providers.openai_compat.helpers import read_all, sse

RAW_STREAM = (
    b": keepalive\r\n\r\n"
    b'event: message\r\ndata: {"n": 1}\r\n\r\n'
    b'data: {"n":\ndata: 2}\n\n'
    b'data:{"n": 3}\r\r'
    b"id: 7\nretry: 100\n\n"
    b"data:\n\n"
    b'event: error\ndata: {"error": {"message": "x"}}\n\n'
    b'error: {"code": 400, "message": "too long"}\n\n'
    b"data: [DONE]"
)
EXPECTED_EVENTS = [
    (b"message", b'{"n": 1}'),
    (b"", b'{"n":\n2}'),
    (b"", b'{"n": 3}'),
    (b"error", b'{"error": {"message": "x"}}'),
    (b"error", b'{"code": 400, "message": "too long"}'),
    (b"", b"[DONE]"),
]


def decode(pieces: list[bytes]) -> list[tuple[bytes, bytes]]:
    decoder = SSEDecoder()
    events = [e for piece in pieces for e in decoder.feed(piece)]
    return events + decoder.flush()


@pytest.mark.parametrize("split", ["whole", "bytes", "random"])
def test_sse_decoder_is_independent_of_read_boundaries(split: str) -> None:
    if split == "whole":
        pieces = [RAW_STREAM]
    elif split == "bytes":
        pieces = [RAW_STREAM[i : i + 1] for i in range(len(RAW_STREAM))]
    else:
        rng = random.Random(4)
        pieces, i = [], 0
        while i < len(RAW_STREAM):
            step = rng.randint(1, 9)
            pieces.append(RAW_STREAM[i : i + step])
            i += step
    assert decode(pieces) == EXPECTED_EVENTS


def test_sse_decoder_crlf_split_between_reads_is_one_line_end() -> None:
    # "data: a\r" | "\ndata: b\r\n\r\n" is one event with two data lines, not two events.
    assert decode([b"data: a\r", b"\ndata: b\r\n\r\n"]) == [(b"", b"a\nb")]


def test_reader_relays_chunks_and_ends_with_the_usage_chunk() -> None:
    events = text_events(usage=USAGE)
    chunks = read_all(sse(*events))
    assert chunks == [e for e in events if e != DONE]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == USAGE


def test_reader_splits_usage_from_a_content_chunk() -> None:
    events = text_events(usage=USAGE, usage_on_last=True)
    chunks = read_all(sse(*events))
    *content, last = chunks
    assert all("usage" not in c for c in content)
    assert content[-1]["choices"][0]["finish_reason"] == "stop"
    assert last == {
        "id": "chatcmpl-fake0001",
        "object": "chat.completion.chunk",
        "created": 1_760_000_000,
        "model": MODEL,
        "choices": [],
        "usage": USAGE,
    }
    for c in chunks:
        assert_valid(c, "CreateChatCompletionStreamResponse")


def test_reader_holds_an_early_usage_chunk_until_the_end_and_keeps_the_latest() -> None:
    first = {**USAGE, "completion_tokens": 1}
    raw = sse(chunk({"content": "a"}, usage=first), usage_chunk(first), chunk({"content": "b"}, usage=USAGE), DONE)
    chunks = read_all(raw)
    assert [c["choices"][0]["delta"] for c in chunks[:-1]] == [{"content": "a"}, {"content": "b"}]
    assert chunks[-1]["usage"] == USAGE and chunks[-1]["choices"] == []


def test_reader_without_usage_just_ends() -> None:
    chunks = read_all(sse(*text_events(usage=None)))
    assert chunks and all(c["choices"] for c in chunks)


def test_reader_stops_at_done_and_skips_keepalives() -> None:
    reader = StreamTranslator()
    chunks = reader.feed(sse({}, chunk({"content": "a"}), DONE, chunk({"content": "after"})))
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["a"]
    assert reader.done
    assert reader.finish() == []


def test_reader_keeps_null_usage_on_content_chunks() -> None:
    chunks = read_all(sse(chunk({"content": "a"}, usage=None), DONE))
    assert chunks == [chunk({"content": "a"}, usage=None)]


def test_response_tokens_are_counted_for_upstreams_without_usage() -> None:
    assert count_response(completion("one two three", usage=None)) == 3
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]
    assert count_response(completion(None, tool_calls=calls, usage=None)) == 3


def test_json_answer_becomes_stream_chunks() -> None:
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    chunks = completion_to_chunks(completion(None, tool_calls=calls))
    for c in chunks:
        assert_valid(c, "CreateChatCompletionStreamResponse")
    assert chunks[0]["choices"][0]["delta"]["tool_calls"][0]["index"] == 0
    assert chunks[1]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"] == USAGE and chunks[-1]["choices"] == []
