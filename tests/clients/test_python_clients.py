"""The Python client libraries, unchanged, against the real gateway: chat, stream, a tool loop and
structured output, on the offline mock and on a Gemini route (to a fake Gemini answering like a model).

On Gemini the tool loop also checks reasoning continuity: the model's first call carried a thought
signature, and it must reach Gemini again with the call in the next turn, although LangChain and
pydantic-ai send tool calls back without it (the gateway keeps it: completions/tool_state.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.clients.conftest import MODELS
from tests.clients.programs import CHAT, PERSON, PROGRAMS, TOOL_PROMPT, Person
from tests.fakes.gemini import canonical, decoded_signature
from tests.fakes.gemini_model import SIGNATURE, ModelGemini

TOOL_RESULT = f"sunny in {TOOL_PROMPT}"


def expected(library: str, provider: str) -> dict[str, Any]:
    echo = CHAT if provider == "mock" else f"echo: {CHAT}"
    out: dict[str, Any] = {"chat": echo, "stream": echo, "tools": TOOL_RESULT, "structured": Person(name=PERSON, age=0)}
    if library == "langchain-openai":
        out["structured_function_calling"] = out["structured"]
    if library == "pydantic-ai":
        out["structured_tool_output"] = out["structured"]
    return out


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


@pytest.mark.parametrize("library", list(PROGRAMS))
def test_on_the_mock(library: str, base_url: str, api_key: str) -> None:
    results = PROGRAMS[library](base_url, api_key, MODELS["mock"])
    assert normalised(results) == expected(library, "mock")


@pytest.mark.parametrize("library", list(PROGRAMS))
def test_on_gemini(library: str, base_url: str, api_key: str, gemini: ModelGemini) -> None:
    results = PROGRAMS[library](base_url, api_key, MODELS["gemini"])
    assert normalised(results) == expected(library, "gemini")
    signatures = signatures_sent_back(gemini)
    assert signatures and all(sig == SIGNATURE for sig in signatures)  # never the placeholder
