"""Anthropic, upstream failures -> gateway errors: the provider's one mapping, directly and against the
fake Anthropic server (no gateway)."""

from __future__ import annotations

import asyncio

import pytest

from completions.errors import GatewayError, ServiceUnavailable, UpstreamError, UpstreamTimeout
from completions.providers.anthropic import AnthropicProvider, upstream_error
from completions.providers.base import Route
from tests.conftest import free_port
from tests.fakes.anthropic import FakeAnthropic, error_event, error_reply, message, message_start
from tests.fakes.base import Reply
from tests.providers.anthropic.helpers import drain, provider_for, request


def test_transport_errors_map_to_timeouts_and_unreachable() -> None:
    import anthropic
    import httpx2

    req = httpx2.Request("POST", "http://upstream/v1/messages")
    assert isinstance(upstream_error(anthropic.APITimeoutError(request=req)), UpstreamTimeout)
    assert isinstance(upstream_error(httpx2.ReadTimeout("slow", request=req)), UpstreamTimeout)
    cut = upstream_error(httpx2.RemoteProtocolError("peer closed connection", request=req))
    assert (cut.status, cut.code) == (502, "upstream_unreachable") and "RemoteProtocolError" in cut.message
    refused = upstream_error(anthropic.APIConnectionError(request=req))
    assert (refused.status, refused.code) == (502, "upstream_unreachable")


@pytest.mark.parametrize(
    ("reply", "status", "code"),
    [
        (error_reply(429, "rate_limit_error", "slow down", headers={"retry-after": "7"}), 429, "rate_limit_exceeded"),
        (error_reply(529, "overloaded_error", "Overloaded"), 503, "upstream_overloaded"),
        (
            Reply(events=[message_start(message([])), error_event("overloaded_error", "Overloaded")]),
            503,
            "upstream_overloaded",
        ),
        (Reply(events=[message_start(message([])), error_event("api_error", "boom")]), 502, "upstream_error"),
    ],
)
def test_stream_errors_raise_mapped_gateway_errors(
    fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch, reply: Reply, status: int, code: str
) -> None:
    fake.script(reply)
    provider = provider_for(fake, monkeypatch)
    with pytest.raises(GatewayError) as exc:
        asyncio.run(drain(provider, request()))
    assert (exc.value.status, exc.value.code) == (status, code)
    if status == 429:
        assert exc.value.headers["retry-after"] == "7"


def test_unreachable_upstream_and_missing_credential(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    provider = provider_for(fake, monkeypatch, base_url=closed)
    with pytest.raises(UpstreamError) as exc:
        asyncio.run(drain(provider, request()))
    assert exc.value.code == "upstream_unreachable"
    with pytest.raises(UpstreamError):
        asyncio.run(provider.complete(provider.prepare(request())))
    monkeypatch.delenv("TEST_ANTHROPIC_KEY")
    keyless = AnthropicProvider(
        Route(
            model_name="c",
            provider="anthropic",
            upstream_model="m",
            base_url=fake.url,
            api_key_env="TEST_ANTHROPIC_KEY",
        )
    )
    with pytest.raises(ServiceUnavailable) as missing:
        asyncio.run(keyless.complete(keyless.prepare(request())))
    assert missing.value.code == "upstream_credential_missing"
    assert fake.requests == []
