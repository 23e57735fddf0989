"""An Anthropic route's own Messages answers, relayed as they came.

On an Anthropic route the request goes upstream as the client sent it (`AnthropicProvider.
prepare_native`), and the answer comes back unchanged: the `Message` as the upstream sent it, or
its events re-framed one by one. The relay still does what it does for every stream (timeouts,
usage, the log row): `carried()` wraps each upstream event in a chunk the relay can account for
(its text, the stop reason, the cumulative usage), and `NativeSSE` writes the event itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings

from ..errors import GatewayError, UpstreamError
from ..exchange import Exchange
from ..providers.anthropic import convert_usage, finish_reason
from ..relay import close_quietly
from . import envelope
from .translate import event


def account(ex: Exchange, message: dict[str, Any]) -> None:
    """Usage, stop reason and (with content logging) the text of a native answer, for the log."""
    record = ex.record
    record.set_usage(convert_usage(message.get("usage") or {}))
    record.finish_reason = finish_reason(message.get("stop_reason"))
    if settings.GATEWAY_LOG_CONTENT:
        blocks = message.get("content") or []
        record.response_text = "".join(b.get("text") or "" for b in blocks if isinstance(b, dict))


def _merge(usage: dict[str, Any], update: Any) -> None:
    """Anthropic's stream usage is cumulative: the latest value of each field wins."""
    if isinstance(update, dict):
        usage.update({k: v for k, v in update.items() if v is not None})


async def carried(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """Each upstream event as a chat-shaped chunk carrying it (`native`), then, after message_delta,
    a usage chunk with the usage so far. A stream that ends before message_stop is an upstream error."""
    usage: dict[str, Any] = {}
    complete = False
    try:
        async for item in events:
            kind = item.get("type")
            delta: dict[str, Any] = {}
            finish = None
            if kind == "message_start":
                _merge(usage, (item.get("message") or {}).get("usage"))
            elif kind == "content_block_delta":
                change = item.get("delta") or {}
                if change.get("type") == "text_delta" and change.get("text"):
                    delta = {"content": change["text"]}
            elif kind == "message_delta":
                _merge(usage, item.get("usage"))
                finish = finish_reason((item.get("delta") or {}).get("stop_reason"))
            elif kind == "message_stop":
                complete = True
            yield {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "native": item}
            if kind == "message_delta":
                yield {"choices": [], "usage": convert_usage(usage), "native": None}
    finally:
        await close_quietly(events)
    if not complete:
        raise UpstreamError(
            "The anthropic upstream ended the stream before the message was complete.",
            code="upstream_incomplete_stream",
        )


class NativeSSE:
    """Upstream Anthropic events re-framed as they came (a `relay.StreamDialect`), with a ping after
    message_start (the SDK reading the upstream drops its pings)."""

    def chunk(self, chunk: dict[str, Any]) -> bytes | None:
        item = chunk.get("native")
        if item is None:
            return None
        out = event(item)
        if item.get("type") == "message_start":
            out += event({"type": "ping"})
        return out

    def end(self, prompt_tokens: int, completion_tokens: int, counted_here: bool) -> bytes:
        return b""  # the upstream's message_stop was the end

    def error(self, err: GatewayError) -> bytes:
        return event(envelope.error_body(err))
