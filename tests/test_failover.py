"""Failure handling end to end: weighted spread, retries, fallbacks, circuit breakers, timeouts."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from completions.models import ModelRoute
from tests.conftest import free_port, log_rows
from tests.fakes.base import DROP, Pause, Reply
from tests.fakes.openai_server import FakeOpenAI, completion, error, text_events

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="session")
def upstreams() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    first, second = FakeOpenAI().start(), FakeOpenAI().start()
    yield first, second
    first.stop()
    second.stop()


@pytest.fixture
def fakes(
    upstreams: tuple[FakeOpenAI, FakeOpenAI], gateway: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    for fake in upstreams:
        fake.reset()
    settings.GATEWAY_RETRY_BASE_SECONDS = 0.01
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-upstream")
    yield upstreams


def route(model: str, fake: FakeOpenAI | None, upstream: str = "up", **fields: Any) -> ModelRoute:
    base_url = fake.url + "/v1" if fake else f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    return ModelRoute.objects.create(
        model_name=model,
        provider="openai",
        upstream_model=upstream,
        base_url=base_url,
        api_key_env="FAKE_UPSTREAM_KEY",
        **fields,
    )


def test_weighted_spread_over_two_routes(fakes: Any, client: Any) -> None:
    a, b = fakes
    route("spread", a, "a", weight=3)
    route("spread", b, "b", weight=1)
    for _ in range(200):
        client.chat.completions.create(model="spread", messages=HI)
    share = len(a.chat_requests()) / 200
    assert len(a.chat_requests()) + len(b.chat_requests()) == 200
    assert 0.63 < share < 0.86  # 3:1 expected 0.75
    models = Counter(r.upstream_model for r in log_rows(model="spread"))
    assert models == {"a": len(a.chat_requests()), "b": len(b.chat_requests())}


def test_retry_then_success_is_one_answer_with_both_attempts_logged(fakes: Any, client: Any) -> None:
    a, _ = fakes
    route("flaky", a, max_retries=2)
    a.script(Reply(status=503, json=error("overloaded", "server_error")), Reply(status=500, body=b"<html>oops</html>"))
    raw = client.chat.completions.with_raw_response.create(model="flaky", messages=HI)
    assert raw.parse().choices[0].message.content == "Hello from the fake upstream."
    assert raw.headers["x-gateway-attempts"] == "3"
    assert len(a.chat_requests()) == 3
    (row,) = log_rows(model="flaky")
    assert row.status_code == 200
    assert [(x["ok"], x.get("status")) for x in row.attempts] == [(False, 503), (False, 502), (True, None)]
    assert all(x["route"] == row.attempts[0]["route"] and x["ms"] >= 0 for x in row.attempts)


def test_retries_exhausted_then_fallback_to_another_provider(fakes: Any, client: Any) -> None:
    a, _ = fakes
    route("primary", a, max_retries=1, fallbacks=["backup"])
    ModelRoute.objects.create(model_name="backup", provider="mock", upstream_model="backup-mock")
    a.script(*[Reply(status=502, json=error("bad gateway", "server_error"))] * 2)
    answer = client.chat.completions.create(model="primary", messages=HI)
    assert answer.model == "backup-mock" and answer.choices[0].message.content == "hi"
    (row,) = log_rows(model="primary")
    assert (row.status_code, row.provider, row.upstream_model) == (200, "mock", "backup-mock")
    assert [(x["provider"], x["ok"]) for x in row.attempts] == [("openai", False), ("openai", False), ("mock", True)]


def test_connect_error_fails_over(fakes: Any, client: Any) -> None:
    route("nowhere", None, max_retries=1, fallbacks=["backup"])
    ModelRoute.objects.create(model_name="backup", provider="mock", upstream_model="backup-mock")
    assert client.chat.completions.create(model="nowhere", messages=HI).model == "backup-mock"
    (row,) = log_rows(model="nowhere")
    assert [x.get("error") for x in row.attempts[:2]] == ["upstream_unreachable", "upstream_unreachable"]


def test_all_routes_fail_gives_the_last_upstream_error(fakes: Any, client: Any) -> None:
    a, b = fakes
    route("doomed", a, max_retries=0, fallbacks=["doomed-too"])
    route("doomed-too", b, max_retries=0)
    a.script(Reply(status=500, json=error("first broke", "server_error")))
    b.script(
        Reply(
            status=429, json=error("slow down", "requests", code="rate_limit_exceeded"), headers={"retry-after": "30"}
        )
    )
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="doomed", messages=HI)
    assert exc.value.body["message"] == "slow down"
    (row,) = log_rows(model="doomed")
    assert row.status_code == 429 and len(row.attempts) == 2


def test_client_errors_are_not_retried(fakes: Any, client: Any) -> None:
    a, _ = fakes
    route("strict", a, max_retries=3, fallbacks=["backup"])
    ModelRoute.objects.create(model_name="backup", provider="mock", upstream_model="backup-mock")
    a.script(Reply(status=400, json=error("bad thing", param="messages")))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="strict", messages=HI)
    assert len(a.chat_requests()) == 1


def test_long_retry_after_moves_on_instead_of_waiting(fakes: Any, client: Any) -> None:
    a, b = fakes
    route("busy", a, max_retries=3, fallbacks=["calm"])
    route("calm", b)
    a.script(Reply(status=429, json=error("quota", "requests"), headers={"retry-after": "120"}))
    started = time.monotonic()
    assert client.chat.completions.create(model="busy", messages=HI).choices[0].message.content
    assert time.monotonic() - started < 3 and len(a.chat_requests()) == 1 and len(b.chat_requests()) == 1


def test_circuit_breaker_opens_skips_and_closes_after_a_probe(fakes: Any, client: Any) -> None:
    a, _ = fakes
    route("fragile", a, max_retries=0, fallbacks=["backup"], options={"breaker_failures": 2, "breaker_cooldown": 0.6})
    ModelRoute.objects.create(model_name="backup", provider="mock", upstream_model="backup-mock")
    a.script(*[Reply(status=503, json=error("down", "server_error"))] * 3)
    for _ in range(2):  # two failures open the breaker (each still answered by the fallback)
        assert client.chat.completions.create(model="fragile", messages=HI).model == "backup-mock"
    assert len(a.chat_requests()) == 2
    assert client.chat.completions.create(model="fragile", messages=HI).model == "backup-mock"
    assert len(a.chat_requests()) == 2, "an open breaker must skip the route"
    assert log_rows(model="fragile")[-1].attempts[0]["skipped"] == "circuit open"
    time.sleep(0.7)
    assert client.chat.completions.create(model="fragile", messages=HI).model == "backup-mock"  # probe fails
    assert len(a.chat_requests()) == 3
    assert client.chat.completions.create(model="fragile", messages=HI).model == "backup-mock"  # open again
    assert len(a.chat_requests()) == 3
    time.sleep(0.7)
    assert client.chat.completions.create(model="fragile", messages=HI).model == "up"  # probe succeeds: closed
    assert client.chat.completions.create(model="fragile", messages=HI).model == "up"
    assert len(a.chat_requests()) == 5


def test_stalled_upstream_times_out(fakes: Any, client: Any) -> None:
    a, _ = fakes
    route("stalled", a, max_retries=0, first_byte_timeout=0.5)
    a.script(Reply(json=completion(), delay=5))
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(model="stalled", messages=HI)
    assert exc.value.status_code == 504 and exc.value.body["code"] == "upstream_timeout"
    assert time.monotonic() - started < 2.5


def test_stream_stalled_between_chunks_ends_with_an_error_event(fakes: Any, raw: httpx.Client) -> None:
    a, _ = fakes
    route("idle", a, idle_timeout=0.5)
    events = text_events()
    a.script(Reply(events=[events[0], events[1], Pause(5), *events[2:]]))
    started = time.monotonic()
    with raw.stream("POST", "/v1/chat/completions", json={"model": "idle", "messages": HI, "stream": True}) as r:
        payloads = [e.removeprefix("data: ") for e in r.read().decode().split("\n\n") if e]
    assert time.monotonic() - started < 3
    assert payloads[-1] == "[DONE]"
    assert json.loads(payloads[-2])["error"]["code"] == "upstream_timeout"
    (row,) = log_rows(model="idle")
    assert row.stream and row.error_code == "upstream_timeout" and row.status_code == 504


def test_stream_first_byte_failure_is_retried_but_a_mid_stream_drop_is_reported(fakes: Any, raw: httpx.Client) -> None:
    a, _b = fakes
    route("wobbly", a, max_retries=1)
    a.script(Reply(status=503, json=error("warming up", "server_error")))  # before the first byte: retried
    with raw.stream("POST", "/v1/chat/completions", json={"model": "wobbly", "messages": HI, "stream": True}) as r:
        assert r.status_code == 200
        text = r.read().decode()
    assert "Hello" in text and text.endswith("data: [DONE]\n\n") and '"error"' not in text
    events = text_events()
    a.script(Reply(events=[events[0], events[1], DROP]))  # after the first byte: reported in the stream
    with raw.stream("POST", "/v1/chat/completions", json={"model": "wobbly", "messages": HI, "stream": True}) as r:
        payloads = [e.removeprefix("data: ") for e in r.read().decode().split("\n\n") if e]
    assert payloads[-1] == "[DONE]" and "error" in json.loads(payloads[-2])
    rows = log_rows(model="wobbly")
    assert [r.status_code for r in rows] == [200, 502]
    assert len(rows[0].attempts) == 2 and rows[1].error_type
