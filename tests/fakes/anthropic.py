"""A fake Anthropic Messages API (POST /v1/messages and /count_tokens), close enough for the `anthropic` SDK.

Answers are Anthropic `Message` JSON or its server-sent-event stream, framed
`event: <type>\\ndata: <json>\\n\\n` (the SDK ignores events without an `event:`
line). Build them with the helpers below:

    fake.script(Reply(json=message([text("Hi")])))          # one JSON answer
    fake.script(stream_reply(message([text("Hi")])))       # the same, streamed
    fake.script(error_reply(529, "overloaded_error", "Overloaded"))
    fake.script(Reply(events=[*head, Gate(), *tail]))        # hold the stream back

Without a script the fake answers "Hello from the fake." in the mode asked for.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson

from tests.fakes.base import FakeUpstream, Recorded, Reply

_ids = itertools.count(1)


def sse_event(event: Any) -> bytes:
    """Anthropic's framing: the event's `type` on an `event:` line, then the JSON."""
    if isinstance(event, (bytes, bytearray)):
        return bytes(event)
    return f"event: {event['type']}\n".encode() + b"data: " + orjson.dumps(event) + b"\n\n"


# ---- answers ---------------------------------------------------------------------------------


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value, "citations": None}


def tool_use(name: str, input: dict[str, Any], id: str | None = None) -> dict[str, Any]:
    return {"type": "tool_use", "id": id or f"toolu_{next(_ids):04d}abcdef", "name": name, "input": input}


def thinking(value: str, signature: str = "sig-abc") -> dict[str, Any]:
    return {"type": "thinking", "thinking": value, "signature": signature}


def redacted_thinking(data: str = "opaque") -> dict[str, Any]:
    return {"type": "redacted_thinking", "data": data}


def usage(input_tokens: int = 10, output_tokens: int = 5, **extra: Any) -> dict[str, Any]:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens, **extra}


def message(
    content: list[dict[str, Any]],
    stop_reason: str = "end_turn",
    usage_: dict[str, Any] | None = None,
    model: str = "claude-sonnet-4-6",
) -> dict[str, Any]:
    """An Anthropic `Message`."""
    return {
        "id": f"msg_{next(_ids):04d}fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage_ or usage(),
    }


def error_body(error_type: str, text_: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": text_}}


def error_reply(status: int, error_type: str, text_: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status=status, json=error_body(error_type, text_), headers=dict(headers or {}))


# ---- stream events ------------------------------------------------------------------------------


def split(value: str, size: int) -> list[str]:
    return [value[i : i + size] for i in range(0, len(value), size)] or [""]


def block_events(index: int, block: dict[str, Any], size: int = 4) -> list[dict[str, Any]]:
    """content_block_start, the deltas carrying `block` in pieces of `size` characters, content_block_stop."""
    kind = block["type"]
    if kind == "text":
        start = {**block, "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in split(block["text"], size)]
    elif kind == "tool_use":
        start = {**block, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": ""}]
        deltas += [
            {"type": "input_json_delta", "partial_json": piece}
            for piece in split(orjson.dumps(block["input"]).decode(), size)
        ]
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": piece} for piece in split(block["thinking"], size)]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    else:  # redacted_thinking arrives whole
        start, deltas = block, []
    events = [{"type": "content_block_start", "index": index, "content_block": start}]
    events += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
    events.append({"type": "content_block_stop", "index": index})
    return events


def message_start(msg: dict[str, Any]) -> dict[str, Any]:
    head_usage = {**msg["usage"], "output_tokens": 1}
    return {"type": "message_start", "message": {**msg, "content": [], "stop_reason": None, "usage": head_usage}}


def message_end(msg: dict[str, Any]) -> list[dict[str, Any]]:
    """message_delta (stop reason and cumulative usage) and message_stop."""
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
        "usage": msg["usage"],
    }
    return [delta, {"type": "message_stop"}]


def stream_events(msg: dict[str, Any], size: int = 4) -> list[dict[str, Any]]:
    """The whole event stream Anthropic sends for `msg`, with a ping after the start."""
    events = [message_start(msg), {"type": "ping"}]
    for index, block in enumerate(msg["content"]):
        events += block_events(index, block, size)
    return events + message_end(msg)


def stream_reply(msg: dict[str, Any], size: int = 4) -> Reply:
    return Reply(events=stream_events(msg, size), sse_format=sse_event)


def error_event(error_type: str, text_: str) -> dict[str, Any]:
    return error_body(error_type, text_)


# ---- the server --------------------------------------------------------------------------------


class FakeAnthropic(FakeUpstream):
    """POST /v1/messages: scripted answers, else a short text answer (JSON or stream as asked)."""

    default_text = "Hello from the fake."

    counted_tokens = 321  # what count_tokens answers: unlike any count the gateway makes itself

    def default_reply(self, request: Recorded) -> Reply:
        if request.method == "POST" and request.path == "/v1/messages/count_tokens":
            return Reply(json={"input_tokens": self.counted_tokens})
        if request.method != "POST" or request.path != "/v1/messages":
            return error_reply(404, "not_found_error", f"no route {request.method} {request.path}")
        if not (request.headers.get("authorization") or request.headers.get("x-api-key")):
            return error_reply(401, "authentication_error", "missing credential")
        msg = message([text(self.default_text)])
        return stream_reply(msg) if (request.json or {}).get("stream") else Reply(json=msg)

    def next_reply(self, request: Recorded) -> Reply:
        reply = super().next_reply(request)
        if reply.events is not None and reply.sse_format is None:
            reply.sse_format = sse_event
        return reply

    @property
    def bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of the requests received, in order."""
        return [r.json for r in self.requests]
