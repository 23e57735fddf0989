"""Fixtures of the client-library tests: the real gateway, and two models behind it: the offline mock
(`mock-gpt-model`) and a Gemini route (`gemini-3-pro-preview`) to a fake Gemini that answers like a model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.gemini_model import ModelGemini

GEMINI_KEY_ENV = "CLIENTS_GEMINI_KEY"
MODELS = {"mock": "mock-gpt-model", "gemini": "gemini-fake"}


@pytest.fixture(scope="session")
def model_gemini() -> Iterator[ModelGemini]:
    fake = ModelGemini().start()
    yield fake
    fake.stop()


@pytest.fixture
def gemini(gateway: Any, model_gemini: ModelGemini, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelGemini]:
    """The fake, reset, behind the route `gemini-fake` (a Gemini 3 model: thought signatures matter)."""
    from completions.models import ModelRoute

    model_gemini.reset()
    monkeypatch.setenv(GEMINI_KEY_ENV, "test-key")
    ModelRoute.objects.create(
        model_name=MODELS["gemini"],
        provider="gemini",
        upstream_model="gemini-3-pro-preview",
        base_url=model_gemini.url,
        api_key_env=GEMINI_KEY_ENV,
        max_retries=0,
    )
    yield model_gemini
    model_gemini.reset()


@pytest.fixture
def base_url(gateway: Any) -> str:
    return gateway.url + "/v1"
