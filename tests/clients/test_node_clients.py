"""The Node client libraries, unchanged, against the real gateway: `node clients.mjs` (tests/clients/node,
installed by `make test` with `npm ci`) runs chat, stream, a tool loop and structured output with
@langchain/openai, the AI SDK (@ai-sdk/openai-compatible and @ai-sdk/openai's `.chat()`) and the
openai package's zod helpers, on the offline mock and on a Gemini route to a fake Gemini."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.clients.conftest import MODELS
from tests.clients.matrix import expected, normalised, person_of, signatures_sent_back
from tests.conftest import node_tool
from tests.fakes.gemini_model import SIGNATURE, ModelGemini

NODE_DIR = Path(__file__).parent / "node"
LIBRARIES = ["@langchain/openai", "@ai-sdk/openai-compatible", "@ai-sdk/openai .chat()", "openai (zod helpers)"]


def run_node(base_url: str, key: str, model: str) -> dict[str, Any]:
    node = node_tool("node")
    assert (NODE_DIR / "node_modules").is_dir(), "run `make test` (it runs npm ci in tests/clients/node)"
    env = {**os.environ, "GATEWAY_BASE_URL": base_url, "GATEWAY_KEY": key, "GATEWAY_MODEL": model}
    done = subprocess.run(
        [node, "clients.mjs"], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=100, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


EXTRA = {"@langchain/openai": ("structured_function_calling",)}


@pytest.mark.parametrize("provider", ["mock", "gemini"])
def test_node_clients(provider: str, base_url: str, api_key: str, request: pytest.FixtureRequest) -> None:
    fake: ModelGemini | None = request.getfixturevalue("gemini") if provider == "gemini" else None
    results = run_node(base_url, api_key, MODELS[provider])
    assert list(results) == LIBRARIES
    assert {lib: normalised(results[lib]) for lib in LIBRARIES} == {
        lib: expected(provider, person_of(), EXTRA.get(lib, ())) for lib in LIBRARIES
    }
    if fake is not None:
        signatures = signatures_sent_back(fake)
        assert signatures and all(sig == SIGNATURE for sig in signatures)  # never the placeholder
