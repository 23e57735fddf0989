"""Fixtures of the Anthropic provider tests: the fake Anthropic server, reset per test, and a route to it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.anthropic import FakeAnthropic


@pytest.fixture
def fake(anthropic_server: FakeAnthropic) -> Iterator[FakeAnthropic]:
    anthropic_server.reset()
    yield anthropic_server
    anthropic_server.reset()


@pytest.fixture
def claude(gateway: Any, fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> str:
    """A database route `claude-test` to the fake Anthropic (no gateway retries, so one request per attempt)."""
    from completions.models import ModelRoute

    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "test-key")
    ModelRoute.objects.create(
        model_name="claude-test",
        provider="anthropic",
        upstream_model="claude-sonnet-4-6",
        base_url=fake.url,
        api_key_env="TEST_ANTHROPIC_KEY",
        max_retries=0,
    )
    return "claude-test"
