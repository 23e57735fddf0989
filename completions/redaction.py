"""Credentials out of upstream text, before it reaches a client, a log line or the database.

`redact()` replaces with `MARKER` every provider credential the process knows
(the values of the environment variables routes name in `api_key_env`, and of
the providers' default variables) and anything shaped like a well-known key
(`sk-...`, `sk-ant-...`, `gsk_...`, `AIza...`, `Bearer <token>`). Values are
read from the environment at each call, so a rotated key is covered at once.

Every gateway error that quotes an upstream is built in `errors.py`, which
passes its message through here; providers never scrub text themselves.
"""

from __future__ import annotations

import os
import re

MARKER = "[redacted]"
# The variables the providers read when a route names none.
DEFAULT_KEY_ENVS = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_API_KEY")
# Shorter values are not credentials anyone could steal, and replacing them would garble messages.
MIN_SECRET_LENGTH = 8

_key_envs: set[str] = set(DEFAULT_KEY_ENVS)

# OpenAI (sk-, sk-proj-), Anthropic (sk-ant-), Groq (gsk_), xAI, and the pk-/rk- of other vendors; masked
# forms such as `sk-abc*****xyz` too. A trailing dot ends the sentence, not the key.
_KEY_SHAPES = re.compile(r"\b(?:sk|pk|rk|gsk|xai)[-_][A-Za-z0-9_\-*.]{5,}[A-Za-z0-9_\-*]|\bAIza[0-9A-Za-z_\-]{20,}")
# A bearer token: at least 8 characters with a digit (so "Bearer authentication" is left alone).
_BEARER = re.compile(r"\bBearer\s+(?=[A-Za-z0-9_.~+/\-]*\d)[A-Za-z0-9_.~+/\-]{8,}=*")


def watch_env(name: str) -> None:
    """Treat the value of environment variable `name` as a credential from now on (routes name theirs)."""
    if name:
        _key_envs.add(name)


def known_credentials() -> list[str]:
    """The credential values in the environment now, longest first (a key containing another goes whole)."""
    values = {os.environ.get(name) or "" for name in tuple(_key_envs)}
    return sorted((v for v in values if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def redact(text: str) -> str:
    """`text` with every known credential and every key-shaped string replaced by `MARKER`."""
    for secret in known_credentials():
        if secret in text:
            text = text.replace(secret, MARKER)
    text = _BEARER.sub(f"Bearer {MARKER}", text)
    return _KEY_SHAPES.sub(MARKER, text)
