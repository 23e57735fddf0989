"""One `anthropic` SDK program, four providers: the same Messages code (create, stream, a tool loop,
streamed tool calls, count_tokens) against mock, Gemini, Anthropic and OpenAI-compatible routes
from one routing file, each upstream a real local server speaking its own protocol.

The fake upstreams answer like models do (see tests/test_providers_matrix.py): with tools offered
they call `get_weather`; given the tool's result they answer with it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
import yaml

from completions.route_config import apply
from tests.conftest import log_rows
from tests.fakes import gemini as fg
from tests.fakes import openai_server as fo
from tests.fakes.base import DROP, Reply
from tests.test_providers_matrix import ToolAnthropic, ToolGemini, ToolOpenAI

WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, Any]]:
    servers = {"gemini": ToolGemini().start(), "anthropic": ToolAnthropic().start(), "openai": ToolOpenAI().start()}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def routed(gateway: Any, fakes: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for fake in fakes.values():
        fake.reset()
    for name in ("GEMINI_TEST_KEY", "ANTHROPIC_TEST_KEY", "OPENAI_TEST_KEY"):
        monkeypatch.setenv(name, "test-key")
    routes = yaml.safe_load(
        f"""
routes:
  - {{model: msg-mock, provider: mock, upstream_model: mock-gpt-model}}
  - {{model: msg-gemini, provider: gemini, upstream_model: gemini-2.5-flash,
      base_url: "{fakes["gemini"].url}", api_key_env: GEMINI_TEST_KEY}}
  - {{model: msg-anthropic, provider: anthropic, upstream_model: claude-sonnet-4-6,
      base_url: "{fakes["anthropic"].url}", api_key_env: ANTHROPIC_TEST_KEY}}
  - {{model: msg-openai, provider: openai, upstream_model: upstream-model-x,
      base_url: "{fakes["openai"].url}/v1", api_key_env: OPENAI_TEST_KEY}}
"""
    )
    apply(routes)
    return fakes


def program(client: anthropic.Anthropic, model: str) -> dict[str, Any]:
    """What a user of the anthropic SDK writes, whatever model is behind the gateway."""
    out: dict[str, Any] = {}
    hello = [{"role": "user", "content": "Say hello"}]
    out["create"] = client.messages.with_raw_response.create(model=model, max_tokens=200, messages=hello)
    with client.messages.stream(model=model, max_tokens=200, messages=hello) as stream:
        out["stream_events"] = [event.type for event in stream]
        out["stream"] = stream.get_final_message()

    messages: list[Any] = [{"role": "user", "content": "Paris"}]
    first = client.messages.create(
        model=model, max_tokens=200, messages=messages, tools=[WEATHER], tool_choice={"type": "any"}
    )
    out["tool_call"] = first
    call = next(block for block in first.content if block.type == "tool_use")
    messages += [
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21C"}]},
    ]
    out["tool_answer"] = client.messages.create(model=model, max_tokens=200, messages=messages, tools=[WEATHER])
    with client.messages.stream(
        model=model, max_tokens=200, messages=messages[:1], tools=[WEATHER], tool_choice={"type": "any"}
    ) as stream:
        out["tool_stream"] = stream.get_final_message()
    out["count"] = client.messages.count_tokens(model=model, messages=hello)
    return out


CASES = [
    pytest.param("msg-mock", "mock", id="mock"),
    pytest.param("msg-gemini", "gemini", id="gemini"),
    pytest.param("msg-anthropic", "anthropic", id="anthropic"),
    pytest.param("msg-openai", "openai", id="openai-compatible"),
]


@pytest.mark.parametrize(("model", "provider"), CASES)
def test_same_messages_code_on_every_provider(
    routed: dict[str, Any], claude: anthropic.Anthropic, model: str, provider: str
) -> None:
    out = program(claude, model)

    raw = out["create"]
    body = json.loads(raw.http_response.text)
    assert set(body) >= {"id", "type", "role", "content", "model", "stop_reason", "stop_sequence", "usage"}
    assert body["type"] == "message" and body["role"] == "assistant" and body["id"].startswith("msg_")
    assert raw.headers["x-gateway-provider"] == provider
    message = raw.parse()
    assert message.content[0].type == "text" and message.content[0].text and message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0

    events = out["stream_events"]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert {"content_block_start", "content_block_delta", "content_block_stop", "message_delta"} <= set(events)
    assert out["stream"].content[0].text and out["stream"].stop_reason == "end_turn"
    assert out["stream"].usage.output_tokens > 0

    first = out["tool_call"]
    call = next(block for block in first.content if block.type == "tool_use")
    assert first.stop_reason == "tool_use" and call.name == "get_weather" and "city" in call.input and call.id
    assert "sunny" in out["tool_answer"].content[-1].text and out["tool_answer"].stop_reason == "end_turn"
    streamed = next(block for block in out["tool_stream"].content if block.type == "tool_use")
    assert streamed.name == "get_weather" and "city" in streamed.input
    assert out["tool_stream"].stop_reason == "tool_use"
    assert out["count"].input_tokens > 0

    rows = log_rows(model=model)
    created = [r for r in rows if r.endpoint == "messages"]
    assert len(created) == 5 and {r.provider for r in created} == {provider}
    assert all(r.status_code == 200 and r.total_tokens > 0 for r in created)
    assert {r.stream for r in created} == {True, False}
    if provider != "mock":
        assert len(routed[provider].requests) >= 5  # every call reached the upstream over HTTP


def test_gemini_thought_signatures_survive_the_tool_loop(routed: dict[str, Any], claude: anthropic.Anthropic) -> None:
    """Gemini's signature rides in the tool_use id, so an Anthropic-shaped client gives it back unchanged."""
    out = program(claude, "msg-gemini")
    sent = [fg.canonical(r.json) for r in routed["gemini"].requests if r.json and r.json.get("contents")]
    loop = next(body for body in sent if len(body["contents"]) == 3)
    model_turn = loop["contents"][1]["parts"][0]
    assert model_turn["functionCall"]["name"] == "get_weather" and fg.decoded_signature(model_turn) == b"sig"
    result = loop["contents"][2]["parts"][0]["functionResponse"]
    assert result["name"] == "get_weather"
    assert "sunny" in out["tool_answer"].content[-1].text


def test_openai_compatible_upstream_receives_chat_completions(
    routed: dict[str, Any], claude: anthropic.Anthropic
) -> None:
    claude.messages.create(
        model="msg-openai",
        max_tokens=64,
        system="Be brief.",
        stop_sequences=["END"],
        metadata={"user_id": "user-7"},
        messages=[{"role": "user", "content": "Hi"}],
    )
    (sent,) = [r.json for r in routed["openai"].chat_requests()]
    assert sent["model"] == "upstream-model-x" and sent["max_tokens"] == 64 and sent["stop"] == ["END"]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert sent["user"] == "user-7"


def test_what_a_provider_cannot_honour_names_the_messages_field(
    routed: dict[str, Any], claude: anthropic.Anthropic
) -> None:
    with pytest.raises(anthropic.BadRequestError) as exc:
        claude.messages.create(
            model="msg-gemini",
            max_tokens=64,
            messages=[{"role": "user", "content": "Paris"}],
            extra_body={"top_k": 5},  # the SDK (2.x) has no top_k parameter
        )
    assert exc.value.body["error"]["message"].startswith("top_k:")
    assert routed["gemini"].requests == []  # refused before any upstream call


def test_a_translated_stream_cut_mid_way_ends_with_an_error_event(
    routed: dict[str, Any], claude: anthropic.Anthropic
) -> None:
    routed["openai"].script(Reply(events=[*fo.text_events("partial words here")[:3], DROP]))
    with (
        pytest.raises(anthropic.APIStatusError) as exc,
        claude.messages.stream(model="msg-openai", max_tokens=50, messages=[{"role": "user", "content": "x"}]) as s,
    ):
        for _ in s:
            pass
    assert exc.value.body["type"] == "error" and exc.value.body["error"]["type"] == "api_error"
    (row,) = log_rows(model="msg-openai")
    assert row.status_code == 502 and row.stream


def test_an_upstream_error_before_the_stream_is_the_sdks_exception(
    routed: dict[str, Any], claude: anthropic.Anthropic
) -> None:
    routed["gemini"].script(fg.error_reply(429, "RESOURCE_EXHAUSTED", "quota", headers={"retry-after": "60"}))
    hello = [{"role": "user", "content": "x"}]
    with (
        pytest.raises(anthropic.RateLimitError) as exc,
        claude.messages.stream(model="msg-gemini", max_tokens=50, messages=hello),
    ):
        pass
    assert exc.value.body["error"]["type"] == "rate_limit_error"
