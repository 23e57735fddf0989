"""A simple, deterministic token count: one token per whitespace-led word.

Used by the mock model (so streaming and non-streaming count alike) and to
estimate usage when an upstream reports none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .protocol import ImagePart, TextPart

_TOKEN = re.compile(r"\s*\S+")
PER_MESSAGE = 3  # role and framing, as OpenAI's chat format charges
PER_REPLY = 3  # priming of the assistant's reply
PER_IMAGE = 85  # a low-detail image


def split_tokens(text: str) -> list[str]:
    """Tokens whose concatenation is `text` minus trailing whitespace."""
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def count_content(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return count_tokens(content)
    total = 0
    for part in content:
        if isinstance(part, TextPart):
            total += count_tokens(part.text)
        elif isinstance(part, ImagePart):
            total += PER_IMAGE
    return total


def count_prompt(messages: Iterable[Any]) -> int:
    """Prompt tokens of a message list."""
    total = PER_REPLY
    for message in messages:
        total += PER_MESSAGE + count_content(getattr(message, "content", None))
        for call in getattr(message, "tool_calls", None) or []:
            fn = getattr(call, "function", None)
            if fn is not None:
                total += count_tokens(fn.name) + count_tokens(fn.arguments)
    return total


def count_response(response: dict[str, Any]) -> int:
    """Completion tokens of a `CreateChatCompletionResponse`, counted the gateway's way (all choices)."""
    total = 0
    for choice in response.get("choices") or ():
        message = choice.get("message") or {}
        content = message.get("content")
        if isinstance(content, str):
            total += count_tokens(content)
        elif isinstance(content, list):
            total += sum(count_tokens(part.get("text") or "") for part in content if isinstance(part, dict))
        for call in message.get("tool_calls") or ():
            fn = call.get("function") or {}
            total += count_tokens(fn.get("name") or "") + count_tokens(fn.get("arguments") or "")
    return total


def count_embedding_input(value: Any) -> int:
    """Tokens of an embeddings `input`: words of strings, or the length of token arrays."""
    items = [value] if isinstance(value, str) else list(value)
    if items and all(isinstance(x, int) for x in items):
        return len(items)
    return sum(count_tokens(x) if isinstance(x, str) else len(x) for x in items)
