"""What providers attach to the tool calls they answer, kept server-side for clients that drop it.

Gemini's thought signatures and Anthropic's thinking blocks ride on a tool call as `extra_content`
(`{"google": {"thought_signature": …}}`, `{"anthropic": {"thinking_blocks": […]}}`), and the
provider needs them back with the call in the next turn. The `openai` SDK and openai-agents send
them back; LangChain, pydantic-ai and the AI SDK rebuild tool calls from id, name and arguments and
drop them. So the gateway also keeps each call's `extra_content` in Django's cache (Redis when
`REDIS_URL` is set, shared by every worker), for `GATEWAY_TOOL_STATE_SECONDS` (one hour), keyed by
the calling user and the call's id, and puts it back on a tool call a client sends without one.
Keyed by user, so a tenant can never read another tenant's thinking by knowing a call id.

A cache failure never fails a request: the state is then simply not kept (or not restored), as if
the client had dropped it, and the provider falls back to what it does without it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.cache import cache

from . import protocol as p

logger = logging.getLogger(__name__)

VERSION = "v1"  # change when the stored shape changes


def cache_key(user_id: int, call_id: str) -> str:
    """The cache entry of one tool call's state (the id hashed: clients choose ids' length)."""
    digest = hashlib.sha256(call_id.encode()).hexdigest()[:32]
    return f"toolstate:{VERSION}:{user_id}:{digest}"


def carried(calls: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """Call id -> `extra_content`, for the tool calls (dicts, as answers hold them) that carry one."""
    out: dict[str, dict[str, Any]] = {}
    for call in calls:
        if not isinstance(call, dict):
            continue
        extra, call_id = call.get("extra_content"), call.get("id")
        if isinstance(extra, dict) and extra and isinstance(call_id, str) and call_id:
            out[call_id] = extra
    return out


def answer_calls(answer: dict[str, Any]) -> list[Any]:
    """Every tool call of a whole answer's choices."""
    return [
        call for choice in answer.get("choices") or () for call in (choice.get("message") or {}).get("tool_calls") or ()
    ]


def missing(request: p.ChatCompletionRequest) -> list[p.FunctionToolCall]:
    """The tool calls of the history that came back without `extra_content`."""
    return [
        call
        for message in request.messages
        if isinstance(message, p.AssistantMessage)
        for call in message.tool_calls or ()
        if isinstance(call, p.FunctionToolCall) and call.extra_content is None
    ]


async def remember(user_id: int, state: dict[str, dict[str, Any]]) -> None:
    """Keep each call's state for the user (one cache write for all of them)."""
    if not state:
        return
    entries = {cache_key(user_id, call_id): extra for call_id, extra in state.items()}
    try:
        await asyncio.to_thread(cache.set_many, entries, settings.GATEWAY_TOOL_STATE_SECONDS)
    except Exception:
        logger.warning("could not keep the state of %d tool calls", len(entries), exc_info=True)


async def restore(user_id: int, request: p.ChatCompletionRequest) -> int:
    """Put the kept state back on the history's tool calls that came without one; how many got it."""
    calls = missing(request)
    if not calls:
        return 0
    keys = {call.id: cache_key(user_id, call.id) for call in calls}
    try:
        found = await asyncio.to_thread(cache.get_many, list(set(keys.values())))
    except Exception:
        logger.warning("could not read the state of %d tool calls", len(keys), exc_info=True)
        return 0
    restored = 0
    for call in calls:
        extra = found.get(keys[call.id])
        if isinstance(extra, dict):
            call.extra_content = extra
            restored += 1
    return restored
