"""The Python client libraries, unchanged, against the real gateway: chat, stream, a tool loop and
structured output, on the offline mock and on a Gemini route (to a fake Gemini answering like a model).

On Gemini the tool loop also checks reasoning continuity: the model's first call carried a thought
signature, and it must reach Gemini again with the call in the next turn, although LangChain and
pydantic-ai send tool calls back without it (the gateway keeps it: completions/tool_state.py).
"""

from __future__ import annotations

import pytest

from tests.clients.conftest import MODELS
from tests.clients.matrix import expected, normalised, person_of, signatures_sent_back
from tests.clients.programs import PROGRAMS, Person
from tests.fakes.gemini_model import SIGNATURE, ModelGemini

# Checks some libraries run besides the four: a second way to get structured output.
EXTRA = {"langchain-openai": ("structured_function_calling",), "pydantic-ai": ("structured_tool_output",)}


@pytest.mark.parametrize("library", list(PROGRAMS))
def test_on_the_mock(library: str, base_url: str, api_key: str) -> None:
    results = PROGRAMS[library](base_url, api_key, MODELS["mock"])
    assert normalised(results) == expected("mock", person_of(Person), EXTRA.get(library, ()))


@pytest.mark.parametrize("library", list(PROGRAMS))
def test_on_gemini(library: str, base_url: str, api_key: str, gemini: ModelGemini) -> None:
    results = PROGRAMS[library](base_url, api_key, MODELS["gemini"])
    assert normalised(results) == expected("gemini", person_of(Person), EXTRA.get(library, ()))
    signatures = signatures_sent_back(gemini)
    assert signatures and all(sig == SIGNATURE for sig in signatures)  # never the placeholder
