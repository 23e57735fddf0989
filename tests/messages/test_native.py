"""The Messages API on an Anthropic route: the request goes upstream natively, as the client sent it
(through the anthropic SDK, `cache_control`, thinking and betas intact), and the answer comes back
as the upstream sent it; the log row, limits and failover work as on every route."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import log_rows
from tests.fakes.anthropic import (
    FakeAnthropic,
    error_event,
    error_reply,
    message,
    message_start,
    stream_events,
    stream_reply,
    text,
    thinking,
    tool_use,
    usage,
)
from tests.fakes.base import Reply
from tests.messages.test_e2e_mock import sse_events

CACHED = {"type": "ephemeral"}
WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    "cache_control": CACHED,
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(gateway: Any, upstream: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> FakeAnthropic:
    """Routes to the fake: `sonnet` alone, and `flaky` falling back to the mock model."""
    from completions.models import ModelRoute

    upstream.reset()
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "test-key")
    common = {"provider": "anthropic", "base_url": upstream.url, "api_key_env": "TEST_ANTHROPIC_KEY", "max_retries": 0}
    ModelRoute.objects.create(model_name="sonnet", upstream_model="claude-sonnet-4-6", **common)
    ModelRoute.objects.create(
        model_name="flaky", upstream_model="claude-haiku-4-5", fallbacks=["mock-gpt-model"], **common
    )
    return upstream


def claude_code_body(**extra: Any) -> dict[str, Any]:
    """A tool round trip as Claude Code sends it: everything only Anthropic honours, in one request."""
    return {
        "model": "sonnet",
        "max_tokens": 32000,
        "thinking": {"type": "adaptive", "display": "omitted"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "metadata": {"user_id": '{"session_id":"s-1"}'},
        "top_k": 40,
        "system": [
            {"type": "text", "text": "billing header"},
            {"type": "text", "text": "You are Claude Code.", "cache_control": CACHED},
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather?", "cache_control": CACHED}]},
            {"role": "system", "content": "<env>cwd: /tmp</env>"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Call it.", "signature": "sig-1"},
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny", "cache_control": CACHED}
                ],
            },
        ],
        "tools": [WEATHER, {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
        **extra,
    }


BETAS = "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27"


def test_create_goes_upstream_as_sent(fake: FakeAnthropic, raw_messages: httpx.Client) -> None:
    answer = message(
        [thinking("Done.", "sig-2"), text("Sunny in Paris.")],
        usage_=usage(100, 20, cache_creation_input_tokens=30, cache_read_input_tokens=400),
    )
    fake.script(Reply(json=answer))
    body = claude_code_body()
    response = raw_messages.post(
        "/v1/messages?beta=true", json=body, headers={"anthropic-beta": BETAS, "anthropic-version": "2023-06-01"}
    )
    assert response.status_code == 200 and response.headers["x-gateway-provider"] == "anthropic"
    assert response.json() == answer  # the upstream's message, as it sent it
    (sent,) = fake.requests
    assert sent.path == "/v1/messages" and sent.json == {**body, "model": "claude-sonnet-4-6"}
    assert sent.headers["anthropic-beta"] == BETAS and sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["authorization"] == "Bearer test-key"  # the route's credential, not the caller's key
    (row,) = log_rows(endpoint="messages")
    assert (row.provider, row.upstream_model, row.stream) == ("anthropic", "claude-sonnet-4-6", False)
    assert (row.prompt_tokens, row.completion_tokens, row.finish_reason) == (530, 20, "stop")
    assert row.end_user == '{"session_id":"s-1"}'


def test_stream_relays_the_upstream_events(fake: FakeAnthropic, raw_messages: httpx.Client) -> None:
    answer = message(
        [thinking("Let me see.", "sig-3"), text("Calling."), tool_use("get_weather", {"city": "Rome"}, "toolu_02")],
        stop_reason="tool_use",
        usage_=usage(50, 12),
    )
    fake.script(stream_reply(answer))
    response = raw_messages.post("/v1/messages", json=claude_code_body(stream=True))
    assert response.status_code == 200
    got = [data for _, data in sse_events(response.text)]
    assert got == stream_events(answer)  # event for event, ping included
    assert fake.requests[0].json == {**claude_code_body(), "model": "claude-sonnet-4-6", "stream": True}
    (row,) = log_rows(endpoint="messages")
    assert (row.stream, row.prompt_tokens, row.completion_tokens, row.finish_reason) == (True, 50, 12, "tool_calls")
    assert not row.usage_estimated


def test_sdk_stream_helper_and_thinking(fake: FakeAnthropic, claude: anthropic.Anthropic) -> None:
    fake.script(stream_reply(message([thinking("Hmm.", "sig-4"), text("Yes.")])))
    with claude.messages.stream(
        model="sonnet",
        max_tokens=4000,
        thinking={"type": "enabled", "budget_tokens": 2000},
        messages=[{"role": "user", "content": "Sure?"}],
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].signature == "sig-4" and final.content[1].text == "Yes."
    assert fake.requests[0].json["thinking"] == {"type": "enabled", "budget_tokens": 2000}


def test_a_failure_mid_stream_is_an_error_event(fake: FakeAnthropic, claude: anthropic.Anthropic) -> None:
    answer = message([text("partial answer")])
    head = [message_start(answer), {"type": "content_block_start", "index": 0, "content_block": text("")}]
    fake.script(Reply(events=[*head, error_event("overloaded_error", "Overloaded")]))
    with (
        pytest.raises(anthropic.APIStatusError) as exc,
        claude.messages.stream(model="sonnet", max_tokens=100, messages=[{"role": "user", "content": "x"}]) as s,
    ):
        for _ in s:
            pass
    assert exc.value.body["error"]["type"] == "overloaded_error"
    (row,) = log_rows(endpoint="messages")
    assert row.status_code == 503 and row.stream


@pytest.mark.parametrize(
    ("status", "kind", "exception"),
    [
        (400, "invalid_request_error", anthropic.BadRequestError),
        (403, "permission_error", anthropic.PermissionDeniedError),
        (429, "rate_limit_error", anthropic.RateLimitError),
        (500, "api_error", anthropic.InternalServerError),
        (529, "overloaded_error", anthropic.OverloadedError),
    ],
)
def test_upstream_errors_raise_the_sdks_classes(
    fake: FakeAnthropic, claude: anthropic.Anthropic, status: int, kind: str, exception: type[Exception]
) -> None:
    fake.script(error_reply(status, kind, "upstream says no", headers={"retry-after": "30"}))
    with pytest.raises(exception) as exc:
        claude.messages.create(model="sonnet", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert exc.value.body["type"] == "error"  # type: ignore[attr-defined]
    assert exc.value.body["error"]["type"] == kind  # type: ignore[attr-defined]


def test_failover_from_anthropic_to_a_translated_route(fake: FakeAnthropic, claude: anthropic.Anthropic) -> None:
    fake.script(error_reply(500, "api_error", "down"))
    answer = claude.messages.with_raw_response.create(
        model="flaky", max_tokens=50, messages=[{"role": "user", "content": "fallback works"}]
    )
    assert answer.headers["x-gateway-provider"] == "mock" and answer.headers["x-gateway-attempts"] == "2"
    assert answer.parse().content[0].text == "fallback works"
    (row,) = log_rows(endpoint="messages")
    assert [a["provider"] for a in row.attempts] == ["anthropic", "mock"]


def test_count_tokens_asks_the_upstream(fake: FakeAnthropic, claude: anthropic.Anthropic) -> None:
    counted = claude.messages.count_tokens(
        model="sonnet", system="Be brief.", messages=[{"role": "user", "content": "Hi"}], tools=[WEATHER]
    )
    assert counted.input_tokens == fake.counted_tokens
    (sent,) = fake.requests
    assert sent.path == "/v1/messages/count_tokens"
    assert sent.json == {
        "model": "claude-sonnet-4-6",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": [WEATHER],
    }
    (row,) = log_rows(endpoint="messages.count_tokens")
    assert row.provider == "anthropic" and row.total_tokens == 0


def test_a_native_request_is_still_held_to_the_limits(fake: FakeAnthropic, gateway: Any, user: Any) -> None:
    from completions.keys import create_api_key

    _, secret = create_api_key(user, "small", tpm_limit=1000)
    client = anthropic.Anthropic(api_key=secret, base_url=gateway.url, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as exc:
        client.messages.create(model="sonnet", max_tokens=5000, messages=[{"role": "user", "content": "x"}])
    assert "too large" in json.dumps(exc.value.body)
    assert fake.requests == []
