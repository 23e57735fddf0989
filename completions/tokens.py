"""A simple, deterministic token count: one token per whitespace-led word.

Used by the mock model (so streaming and non-streaming count alike) and to
estimate usage when an upstream reports none.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

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
