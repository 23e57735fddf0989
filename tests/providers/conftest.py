"""The fake provider servers, one of each per test session; each provider's package resets its own per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.gemini import FakeGemini
from tests.fakes.openai_server import FakeOpenAI


@pytest.fixture(scope="session")
def gemini_server() -> Iterator[FakeGemini]:
    fake = FakeGemini().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def anthropic_server() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def openai_server() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()
