"""Anthropic, the provider's I/O: the provider driven directly against the fake Anthropic server (no gateway)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from completions.providers.anthropic import AnthropicProvider
from completions.providers.base import Route
from tests.fakes.anthropic import FakeAnthropic, message, stream_events, text
from tests.fakes.base import Gate, Reply
from tests.providers.anthropic.helpers import provider_for, request


def test_stream_yields_nothing_before_the_first_upstream_event(
    fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate()
    events = stream_events(message([text("Hi")]))
    fake.script(Reply(events=[gate, *events]))
    provider = provider_for(fake, monkeypatch)

    async def run() -> tuple[bool, dict[str, Any]]:
        stream = provider.stream(provider.prepare(request()))
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0.3)
        early = first.done()
        gate.open()
        chunk = await first
        await stream.aclose()
        await provider.aclose()
        return early, chunk

    early, chunk = asyncio.run(run())
    assert not early
    assert chunk["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def test_default_key_variable_and_timeouts(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "default-key")
    provider = AnthropicProvider(
        Route(
            model_name="c",
            provider="anthropic",
            upstream_model="m",
            base_url=fake.url,
            connect_timeout=2,
            first_byte_timeout=20,
            idle_timeout=40,
        )
    )

    async def run() -> dict[str, Any]:
        try:
            return await provider.complete(provider.prepare(request()))
        finally:
            await provider.aclose()

    timeout = provider.client().timeout
    assert (timeout.connect, timeout.read) == (2, 45)
    assert provider.client().max_retries == 0
    out = asyncio.run(run())
    assert out["choices"][0]["message"]["content"] == "Hello from the fake."
    assert fake.requests[-1].headers["authorization"] == "Bearer default-key"
