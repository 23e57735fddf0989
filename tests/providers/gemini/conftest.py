"""Fixtures of the Gemini provider tests: the fake Gemini server, reset per test, and a route to it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.gemini import FakeGemini
from tests.providers.gemini.helpers import KEY_ENV


@pytest.fixture
def fake(gemini_server: FakeGemini, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGemini]:
    gemini_server.reset()
    monkeypatch.setenv(KEY_ENV, "test-key")
    yield gemini_server
    gemini_server.reset()


@pytest.fixture
def gem(fake: FakeGemini, gateway: Any) -> Any:
    """The `gem` route to the fake (no gateway retries, so each scripted reply is used once)."""
    from completions.models import ModelRoute

    return ModelRoute.objects.create(
        model_name="gem",
        provider="gemini",
        upstream_model="gemini-2.5-flash",
        base_url=fake.url,
        api_key_env=KEY_ENV,
        max_retries=0,
        options={"breaker_failures": 1000},
    )
