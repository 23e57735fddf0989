"""What every client library's checks must give back, on the mock and on the fake Gemini, and what must
have reached Gemini (shared by the Python and the Node client tests)."""

from __future__ import annotations

from typing import Any

from tests.clients.programs import CHAT, PERSON, TOOL_PROMPT
from tests.fakes.gemini import canonical, decoded_signature
from tests.fakes.gemini_model import ModelGemini

TOOL_RESULT = f"sunny in {TOOL_PROMPT}"


def expected(provider: str, person: Any, extra_structured: tuple[str, ...] = ()) -> dict[str, Any]:
    """chat and stream echo (the fake Gemini says `echo: …`), the tool loop ends with the tool's
    result, structured output is the schema's instance for the prompt (strings get its text)."""
    echo = CHAT if provider == "mock" else f"echo: {CHAT}"
    out: dict[str, Any] = {"chat": echo, "stream": echo, "tools": TOOL_RESULT, "structured": person}
    out.update(dict.fromkeys(extra_structured, person))
    return out


def person_of(model: type[Any] | None = None) -> Any:
    value = {"name": PERSON, "age": 0}
    return model(**value) if model is not None else value


def normalised(results: dict[str, Any]) -> dict[str, Any]:
    """The tool loop's answer reduced to the tool result it quotes (the fake Gemini says `The tool said: "…"`)."""
    out = dict(results)
    tools = out.get("tools")
    if isinstance(tools, str) and not tools.startswith("error") and TOOL_RESULT in tools:
        out["tools"] = TOOL_RESULT
    return out


def signatures_sent_back(fake: ModelGemini) -> list[bytes | None]:
    """For each model turn with function calls in what reached Gemini: the first call's signature."""
    found: list[bytes | None] = []
    for request in fake.gemini_requests("generateContent") + fake.gemini_requests("streamGenerateContent"):
        for content in canonical(request.json or {}).get("contents") or []:
            calls = [part for part in content.get("parts") or [] if "functionCall" in part]
            if content.get("role") == "model" and calls:
                found.append(decoded_signature(calls[0]) if "thoughtSignature" in calls[0] else None)
    return found
