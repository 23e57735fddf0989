"""Fixtures of the OpenAI-compatible provider tests: the fake server, reset per test, and routes to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fakes.openai_server import MODEL, FakeOpenAI
from tests.providers.openai_compat.helpers import KEY, KEY_ENV


@pytest.fixture
def fake(openai_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    openai_server.reset()
    monkeypatch.setenv(KEY_ENV, KEY)
    yield openai_server
    openai_server.reset()


@pytest.fixture
def oai_route(gateway: Any, fake: FakeOpenAI) -> Callable[..., Any]:
    """Creates the `oai-test` route to the fake (no retries unless asked, so scripts are exact)."""
    from completions.models import ModelRoute

    def make(**fields: Any) -> Any:
        values: dict[str, Any] = {
            "model_name": "oai-test",
            "provider": "openai",
            "upstream_model": MODEL,
            "base_url": fake.url + "/v1",
            "api_key_env": KEY_ENV,
            "max_retries": 0,
        }
        values.update(fields)
        return ModelRoute.objects.create(**values)

    return make
