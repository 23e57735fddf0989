"""Helpers shared by the Anthropic provider tests: request builders, routes, a provider on the fake."""

from __future__ import annotations

from typing import Any

import pytest

from completions import protocol as p
from completions.errors import InvalidRequest
from completions.providers.anthropic import AnthropicProvider, build_params
from completions.providers.base import Route
from tests.fakes.anthropic import FakeAnthropic

ROUTE = Route(model_name="claude-test", provider="anthropic", upstream_model="claude-sonnet-4-6")
HELLO = [{"role": "user", "content": "hello"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CLOCK_TOOL = {"type": "function", "function": {"name": "get_time"}}
PNG = "data:image/png;base64,iVBORw0KGgo="


def request(**body: Any) -> p.ChatCompletionRequest:
    return p.validate(p.ChatCompletionRequest, {"model": "claude-test", "messages": HELLO, **body})


def params(route: Route = ROUTE, **body: Any) -> dict[str, Any]:
    return build_params(request(**body), route)


def rejection(route: Route = ROUTE, **body: Any) -> InvalidRequest:
    """The 400 the provider's prepare() raises for `body` (before any upstream call)."""
    with pytest.raises(InvalidRequest) as exc:
        AnthropicProvider(route).prepare(request(**body))
    return exc.value


def user_text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def provider_for(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch, **route: Any) -> AnthropicProvider:
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "test-key")
    fields = {
        "model_name": "claude-test",
        "provider": "anthropic",
        "upstream_model": "claude-sonnet-4-6",
        "base_url": fake.url,
        "api_key_env": "TEST_ANTHROPIC_KEY",
    }
    return AnthropicProvider(Route(**{**fields, **route}))


async def drain(provider: AnthropicProvider, req: p.ChatCompletionRequest) -> list[dict[str, Any]]:
    try:
        return [chunk async for chunk in provider.stream(provider.prepare(req))]
    finally:
        await provider.aclose()
