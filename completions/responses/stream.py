"""The Responses event stream, from chat chunks: a relay `StreamDialect` (pure, no I/O).

`ResponsesSSE` emits `response.created` and `response.in_progress` with the first
chunk; each output item is added, filled by its deltas and done before the next
one opens; the stream ends with `response.completed`, `response.incomplete` or
`response.failed`, carrying the whole response (README, "Responses API").
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import GatewayError, UpstreamError
from .translate import (
    Bridge,
    carrier_item,
    new_id,
    output_logprobs,
    reasoning_item,
    response_error,
    status_of,
    text_part,
    usage_of,
)


def event(kind: str, sequence: int, **fields: Any) -> bytes:
    payload = {"type": kind, "sequence_number": sequence, **fields}
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class ResponsesSSE:
    """Chat chunks as the Responses event stream (a relay `StreamDialect`).

    `response.created` and `response.in_progress` come with the first chunk; each
    output item is added, filled by deltas and done before the next one opens;
    the stream ends with `response.completed`, `response.incomplete` or
    `response.failed`, carrying the whole response. `final` holds that response
    once the stream ended (to be stored).
    """

    def __init__(self, bridge: Bridge, record: Any) -> None:
        self.bridge = bridge
        self.record = record
        self.sequence = 0
        self.started = False
        self.output: list[dict[str, Any]] = []  # finished items, in output order
        self.open: dict[str, Any] | None = None  # the item being streamed: {"kind", "item", "index", ...}
        self.calls: dict[int, dict[str, Any]] = {}  # chat tool-call index -> open call state
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.final: dict[str, Any] | None = None

    def _emit(self, out: list[bytes], kind: str, **fields: Any) -> None:
        out.append(event(kind, self.sequence, **fields))
        self.sequence += 1

    # ---- the StreamDialect interface ----
    def chunk(self, chunk: dict[str, Any]) -> bytes | None:
        out: list[bytes] = []
        if not self.started:
            self.started = True
            self.model = chunk.get("model") or None
            shell = self.bridge.envelope("in_progress", [], None, self.model)
            self._emit(out, "response.created", response=shell)
            self._emit(out, "response.in_progress", response=shell)
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) == 0:
                self._choice(out, choice)
        return b"".join(out) or None

    def end(self, prompt_tokens: int, completion_tokens: int, counted_here: bool) -> bytes:
        out: list[bytes] = []
        if not self.output and self.open is None:
            self._text_part(out)  # an empty answer is still a message, as in whole answers
        self._close(out)
        usage = usage_of(self.usage) if self.usage and not counted_here else None
        usage = usage or usage_of({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens})
        if self.finish is None:
            err = UpstreamError(
                "The upstream ended the stream before the answer was finished.", code="stream_incomplete"
            )
            self.record.fail(err.status, err.type, err.code, err.message)
            return self._failed(out, err, usage)
        status, details = status_of(self.finish)
        self.final = self.bridge.envelope(status, self.output, usage, self.model, details=details)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        self._emit(out, kind, response=self.final)
        return b"".join(out)

    def error(self, err: GatewayError) -> bytes:
        out: list[bytes] = []
        if not self.started:
            self.started = True
            shell = self.bridge.envelope("in_progress", [], None, self.model)
            self._emit(out, "response.created", response=shell)
        self._close(out, status="incomplete")
        return self._failed(out, err, None)

    def _failed(self, out: list[bytes], err: GatewayError, usage: dict[str, Any] | None) -> bytes:
        self.final = self.bridge.envelope("failed", self.output, usage, self.model, error=response_error(err))
        self._emit(out, "response.failed", response=self.final)
        return b"".join(out)

    # ---- one chunk's choice ----
    def _choice(self, out: list[bytes], choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        thought = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(thought, str) and thought:
            self._reasoning(out, thought)
        if delta.get("content"):
            logprobs = (choice.get("logprobs") or {}).get("content")
            self._text(out, delta["content"], output_logprobs(logprobs))
        if delta.get("refusal"):
            self._refusal(out, delta["refusal"])
        for call in delta.get("tool_calls") or []:
            self._tool_call(out, call)
        if choice.get("finish_reason"):
            self.finish = choice["finish_reason"]

    def _start(self, out: list[bytes], kind: str, item: dict[str, Any]) -> dict[str, Any]:
        self._close(out)
        state = {"kind": kind, "item": item, "index": len(self.output), "text": []}
        self.open = state
        self._emit(out, "response.output_item.added", output_index=state["index"], item=item)
        return state

    def _reasoning(self, out: list[bytes], text: str) -> None:
        state = self.open
        if state is None or state["kind"] != "reasoning":
            state = self._start(out, "reasoning", reasoning_item(new_id("rs_"), ""))
            part = {"type": "summary_text", "text": ""}
            self._emit(out, "response.reasoning_summary_part.added", **self._at(state), summary_index=0, part=part)
        state["text"].append(text)
        self._emit(out, "response.reasoning_summary_text.delta", **self._at(state), summary_index=0, delta=text)

    def _text(self, out: list[bytes], text: str, logprobs: list[dict[str, Any]]) -> None:
        state = self._text_part(out)
        state["text"].append(text)
        state["logprobs"].extend(logprobs)
        self._emit(
            out,
            "response.output_text.delta",
            **self._at(state),
            content_index=state["content_index"],
            delta=text,
            logprobs=logprobs,
        )

    def _text_part(self, out: list[bytes]) -> dict[str, Any]:
        """The message's open text part (the message and the part opened if they aren't)."""
        state = self._message(out)
        if state["part"] != "text":
            self._end_part(out, state)
            state["part"], state["content_index"] = "text", len(state["parts"])
            state["logprobs"] = []
            at = {**self._at(state), "content_index": state["content_index"]}
            self._emit(out, "response.content_part.added", **at, part=text_part(""))
        return state

    def _refusal(self, out: list[bytes], text: str) -> None:
        state = self._message(out)
        if state["part"] != "refusal":
            self._end_part(out, state)
            state["part"], state["content_index"] = "refusal", len(state["parts"])
            part = {"type": "refusal", "refusal": ""}
            self._emit(
                out, "response.content_part.added", **self._at(state), content_index=state["content_index"], part=part
            )
        state["text"].append(text)
        self._emit(out, "response.refusal.delta", **self._at(state), content_index=state["content_index"], delta=text)

    def _message(self, out: list[bytes]) -> dict[str, Any]:
        state = self.open
        if state is None or state["kind"] != "message":
            item = {
                "id": new_id("msg_"),
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            state = self._start(out, "message", item)
            state.update(part=None, parts=[], content_index=0)
        return state

    def _end_part(self, out: list[bytes], state: dict[str, Any]) -> None:
        """Finish the message's current content part (text or refusal), if one is open."""
        kind = state.get("part")
        if kind is None:
            return
        text = "".join(state["text"])
        at = {**self._at(state), "content_index": state["content_index"]}
        if kind == "text":
            logprobs = state["logprobs"]
            self._emit(out, "response.output_text.done", **at, text=text, logprobs=logprobs)
            part = text_part(text, logprobs)
        else:
            self._emit(out, "response.refusal.done", **at, refusal=text)
            part = {"type": "refusal", "refusal": text}
        self._emit(out, "response.content_part.done", **at, part=part)
        state["parts"].append(part)
        state["part"], state["text"] = None, []

    def _tool_call(self, out: list[bytes], call: dict[str, Any]) -> None:
        index = call.get("index", 0)
        fn = call.get("function") or {}
        state = self.calls.get(index)
        if state is None or state is not self.open:
            self._close(out)
            if call.get("extra_content"):
                self._carrier(out, call.get("id", ""), call["extra_content"])
            item = self.bridge.function_item(new_id("fc_"), call.get("id") or "", fn.get("name") or "", "", done=False)
            state = self._start(out, "call", item)
            state["extra"] = None
            self.calls[index] = state
        elif call.get("extra_content"):
            state["extra"] = call["extra_content"]
        if fn.get("arguments"):
            state["text"].append(fn["arguments"])
            self._emit(out, "response.function_call_arguments.delta", **self._at(state), delta=fn["arguments"])

    def _carrier(self, out: list[bytes], call_id: str, extra_content: dict[str, Any]) -> None:
        item = carrier_item(call_id, extra_content)
        index = len(self.output)
        self._emit(out, "response.output_item.added", output_index=index, item=item)
        self._emit(out, "response.output_item.done", output_index=index, item=item)
        self.output.append(item)

    def _close(self, out: list[bytes], status: str = "completed") -> None:
        """Finish the open item: its closing events, then `response.output_item.done`."""
        state, self.open = self.open, None
        if state is None:
            return
        item = state["item"]
        at = self._at(state)
        if state["kind"] == "reasoning":
            text = "".join(state["text"])
            part = {"type": "summary_text", "text": text}
            self._emit(out, "response.reasoning_summary_text.done", **at, summary_index=0, text=text)
            self._emit(out, "response.reasoning_summary_part.done", **at, summary_index=0, part=part)
            item["summary"] = [part]
        elif state["kind"] == "message":
            self._end_part(out, state)
            item["content"] = state["parts"]
            item["status"] = "incomplete" if status != "completed" or self.finish == "length" else "completed"
        else:
            arguments = "".join(state["text"])
            self._emit(out, "response.function_call_arguments.done", **at, name=item["name"], arguments=arguments)
            item["arguments"], item["status"] = arguments, status
        self._emit(out, "response.output_item.done", output_index=state["index"], item=item)
        self.output.append(item)
        if state["kind"] == "call" and state.get("extra"):
            self._carrier(out, item["call_id"], state["extra"])

    @staticmethod
    def _at(state: dict[str, Any]) -> dict[str, Any]:
        return {"item_id": state["item"]["id"], "output_index": state["index"]}
