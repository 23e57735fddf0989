"""A fake OpenAI-compatible server (OpenAI, vLLM, Ollama, ...): chat completions and embeddings.

`FakeOpenAI` answers `POST /v1/chat/completions` (JSON, or SSE for
`stream: true`) and `POST /v1/embeddings` with deterministic defaults, records
every request, and plays scripted `Reply`s first (see `tests/fakes/base.py`).
`usage_mode` picks how its default streams report usage:

- "separate": a final usage-only chunk, only when `stream_options.include_usage` is true (OpenAI);
- "on_last_chunk": usage on the last content chunk (some servers do this);
- "ignore": never, whatever the request asked (servers that ignore `stream_options`).

The builders below make the answers and chunks tests script by hand.
"""

from __future__ import annotations

from typing import Any

from .base import FakeUpstream, Recorded, Reply

MODEL = "upstream-model-x"
COMPLETION_ID = "chatcmpl-fake0001"
CREATED = 1_760_000_000
DEFAULT_TEXT = "Hello from the fake upstream."
# Deliberately unlike anything the gateway would estimate, so tests can tell them apart.
USAGE = {"prompt_tokens": 42, "completion_tokens": 13, "total_tokens": 55}
EMBEDDING_USAGE = {"prompt_tokens": 9, "total_tokens": 9}
DONE = "[DONE]"
_UNSET: Any = object()


def words(text: str) -> list[str]:
    """`text` cut into word pieces that concatenate back to it."""
    pieces = text.split(" ")
    return [pieces[0]] + [" " + w for w in pieces[1:]]


def completion(
    text: str | None = DEFAULT_TEXT,
    *,
    model: str = MODEL,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str | None = None,
    usage: dict[str, Any] | None = USAGE,
) -> dict[str, Any]:
    """A `CreateChatCompletionResponse`; without `usage` when it is None."""
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    body: dict[str, Any] = {
        "id": COMPLETION_ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
            }
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def chunk(
    delta: dict[str, Any],
    *,
    model: str = MODEL,
    index: int = 0,
    finish_reason: str | None = None,
    usage: Any = _UNSET,
) -> dict[str, Any]:
    """One `CreateChatCompletionStreamResponse` with a single choice."""
    out: dict[str, Any] = {
        "id": COMPLETION_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage is not _UNSET:
        out["usage"] = usage
    return out


def usage_chunk(usage: dict[str, Any] = USAGE, *, model: str = MODEL) -> dict[str, Any]:
    """OpenAI's final usage-only chunk."""
    return {
        "id": COMPLETION_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [],
        "usage": usage,
    }


def text_events(
    text: str = DEFAULT_TEXT,
    *,
    model: str = MODEL,
    usage: dict[str, Any] | None = None,
    usage_on_last: bool = False,
    done: bool = True,
) -> list[Any]:
    """A whole text stream: role chunk, one chunk per word, finish chunk, usage as asked, `[DONE]`."""
    events: list[Any] = [chunk({"role": "assistant", "content": ""}, model=model)]
    events += [chunk({"content": piece}, model=model) for piece in words(text)]
    if usage is not None and usage_on_last:
        events.append(chunk({}, model=model, finish_reason="stop", usage=usage))
    else:
        events.append(chunk({}, model=model, finish_reason="stop"))
        if usage is not None:
            events.append(usage_chunk(usage, model=model))
    if done:
        events.append(DONE)
    return events


def tool_call_events(name: str, arguments: str, *, call_id: str = "call_fake1", model: str = MODEL) -> list[Any]:
    """A streamed function call in OpenAI's incremental shape, then usage and `[DONE]`."""
    head = {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
    half = len(arguments) // 2
    return [
        chunk({"role": "assistant", "content": None, "tool_calls": [head]}, model=model),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[:half]}}]}, model=model),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]}, model=model),
        chunk({}, model=model, finish_reason="tool_calls"),
        usage_chunk(model=model),
        DONE,
    ]


def error(
    message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def vector(index: int) -> list[float]:
    """A small vector of exactly representable float32 values (base64 round trips are exact)."""
    return [0.5, -0.25, 0.125 * (index + 1)]


def embeddings(count: int, *, model: str = MODEL, usage: dict[str, Any] | None = EMBEDDING_USAGE) -> dict[str, Any]:
    """A `CreateEmbeddingResponse` with `count` vectors."""
    body: dict[str, Any] = {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": vector(i)} for i in range(count)],
        "model": model,
    }
    if usage is not None:
        body["usage"] = usage
    return body


class FakeOpenAI(FakeUpstream):
    """The fake server; its defaults behave like OpenAI, `usage_mode` like other servers."""

    def __init__(self) -> None:
        super().__init__()
        self.usage_mode = "separate"
        self.peers: list[Any] = []  # the client (host, port) of each request: one port = one pooled connection

    def reset(self) -> None:
        super().reset()
        self.usage_mode = "separate"
        self.peers = []

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.peers.append(tuple(scope.get("client") or ()))
        await super().app(scope, receive, send)

    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def default_reply(self, request: Recorded) -> Reply:
        if request.method != "POST":
            return Reply(status=405, json=error(f"Method {request.method} not allowed."))
        if request.path == "/v1/chat/completions":
            return self._chat(request.json or {})
        if request.path == "/v1/embeddings":
            body = request.json or {}
            inputs = body.get("input")
            count = (
                1
                if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int))
                else len(inputs or [])
            )
            return Reply(json=embeddings(count, model=body.get("model", MODEL)))
        return Reply(status=404, json=error(f"Invalid URL (POST {request.path})", code="not_found"))

    def _chat(self, body: dict[str, Any]) -> Reply:
        model = body.get("model", MODEL)
        if not body.get("stream"):
            return Reply(json=completion(model=model))
        asked = bool((body.get("stream_options") or {}).get("include_usage"))
        mode = self.usage_mode
        usage = USAGE if (mode == "on_last_chunk" or (mode == "separate" and asked)) else None
        return Reply(events=text_events(model=model, usage=usage, usage_on_last=mode == "on_last_chunk"))
