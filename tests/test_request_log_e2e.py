"""Request-log rows: one per request, written off the request path, including cut-short streams."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import log_rows

WORDS = " ".join(f"w{i}" for i in range(60))


def wait_for_rows(timeout: float = 10.0, **filters: Any) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        rows = log_rows(**filters)
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


@pytest.fixture
def slow_mock(transactional_db: Any) -> str:
    """A mock route that takes 50 ms per streamed word (3 s for the 60 words sent)."""
    from completions.models import ModelRoute

    ModelRoute.objects.create(
        model_name="slow-mock", provider="mock", upstream_model="slow-mock", options={"chunk_delay_ms": 50}
    )
    return "slow-mock"


@pytest.fixture
def sleepy_mock(transactional_db: Any) -> str:
    """A mock route that thinks 3 s before answering."""
    from completions.models import ModelRoute

    ModelRoute.objects.create(
        model_name="sleepy-mock", provider="mock", upstream_model="sleepy-mock", options={"latency_ms": 3000}
    )
    return "sleepy-mock"


def test_stream_disconnect_cancels_and_is_logged(gateway: Any, api_key: str, slow_mock: str) -> None:
    body = {"model": slow_mock, "messages": [{"role": "user", "content": WORDS}], "stream": True}
    started = time.monotonic()
    with (
        httpx.Client(timeout=10) as http,
        http.stream(
            "POST",
            gateway.url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {api_key}", "x-request-id": "cut-short"},
        ) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        seen = [next(lines) for _ in range(5)]
        assert seen[0].startswith("data: ")
        # leaving the block closes the connection mid-stream
    (row,) = wait_for_rows(request_id="cut-short")
    assert row.client_disconnected
    assert row.stream and row.status_code == 200
    # The mock stopped producing: far fewer than 60 words, and the row came long before a full stream (3 s).
    assert 0 < row.completion_tokens < 30
    assert row.usage_estimated
    assert row.latency_ms < 2500 and time.monotonic() - started < 5


def test_non_stream_disconnect_is_499(gateway: Any, api_key: str, sleepy_mock: str) -> None:
    body = {"model": sleepy_mock, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            gateway.url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {api_key}", "x-request-id": "gave-up"},
            timeout=0.5,
        )
    (row,) = wait_for_rows(request_id="gave-up")
    assert row.client_disconnected and row.status_code == 499
    assert row.latency_ms < 2500  # cancelled, not waited out


def test_one_row_per_request_with_the_caller(client: Any, api_key: str, user: Any) -> None:
    from completions.keys import hash_secret
    from completions.models import APIKey

    key = APIKey.objects.get(key_hash=hash_secret(api_key))
    for i in range(5):
        client.chat.completions.create(
            model="mock-gpt-model",
            messages=[{"role": "user", "content": f"n{i}"}],
            user="end-user-7",
            metadata={"team": "x"},
        )
    rows = log_rows(api_key=key)
    assert len(rows) == 5
    assert {r.user_id for r in rows} == {user.id}
    assert {r.key_prefix for r in rows} == {key.prefix}
    assert all(r.end_user == "end-user-7" and r.metadata == {"team": "x"} for r in rows)
    assert all(r.latency_ms >= 0 and r.request_id.startswith("req_") for r in rows)
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_content_is_logged_only_when_enabled(client: Any, settings: Any) -> None:
    settings.GATEWAY_LOG_CONTENT = True
    client.chat.completions.create(model="mock-gpt-model", messages=[{"role": "user", "content": "remember me"}])
    (row,) = log_rows()
    assert row.request_body["messages"][0]["content"] == "remember me"
    assert row.response_text == "remember me"


def test_streamed_answers_are_logged_when_content_logging_is_on(client: Any, settings: Any) -> None:
    """The relayed text of a stream is stored as a whole answer's is (one line per choice)."""
    settings.GATEWAY_LOG_CONTENT = True
    messages = [{"role": "user", "content": "stream me please"}]
    chunks = list(client.chat.completions.create(model="mock-gpt-model", messages=messages, stream=True))
    relayed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert relayed == "stream me please"
    two = list(client.chat.completions.create(model="mock-gpt-model", messages=messages, stream=True, n=2))
    assert {c.choices[0].index for c in two if c.choices} == {0, 1}
    first, second = log_rows()
    assert first.stream and first.request_body["messages"] == messages
    assert first.response_text == "stream me please"
    assert second.response_text == "stream me please\nstream me please"


def test_a_stream_closed_before_its_first_byte_still_cleans_up(transactional_db: Any) -> None:
    """The server may close the response before ever iterating it (client gone at once)."""
    import asyncio

    from completions.app import current
    from completions.exchange import Exchange
    from completions.protocol import ChatCompletionRequest, ChunkFactory
    from completions.providers import Route
    from completions.recorder import RequestRecord
    from completions.relay import Relay

    closed = []

    async def upstream() -> Any:
        chunks = ChunkFactory("m")
        try:
            yield chunks.delta(0, {"role": "assistant", "content": "a"})
            yield chunks.delta(0, {"content": " b"})
        finally:
            closed.append(True)

    async def run() -> RequestRecord:
        stream = upstream()
        first = await anext(stream)
        request = ChatCompletionRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": "x y"}], "stream": True}
        )
        exchange = Exchange(current(), "never-started", "chat.completions")
        exchange.record.model, exchange.record.stream = "m", True
        relay = Relay(exchange, request, Route("m", "mock", "m"), first, stream)
        exchange.respond_stream(relay)
        await relay.aclose()
        await relay.aclose()  # idempotent
        return exchange.record

    record = asyncio.run(run())
    assert closed == [True]
    (row,) = log_rows(request_id="never-started")
    assert row.client_disconnected and row.usage_estimated and row.prompt_tokens == record.prompt_tokens > 0
