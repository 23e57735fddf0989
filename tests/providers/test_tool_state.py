"""The state providers put on tool calls (Gemini thought signatures, Anthropic thinking blocks) is kept
by the gateway and restored when a client sends the call back without it, as LangChain, pydantic-ai and
the AI SDK do; per user, so no tenant reads another's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from completions import protocol as p
from completions import tool_state
from completions.providers.gemini import SKIP_SIGNATURE
from tests.fakes import anthropic as fa
from tests.fakes import gemini as fg
from tests.fakes.base import Reply
from tests.providers.gemini.helpers import KEY_ENV, WEATHER_TOOL

REAL = b"real-thought-signature"
QUESTION = {"role": "user", "content": "Weather in Paris?"}


@pytest.fixture
def routes(gateway: Any, monkeypatch: pytest.MonkeyPatch, gemini_server: Any, anthropic_server: Any) -> Iterator[None]:
    from completions.models import ModelRoute

    for fake in (gemini_server, anthropic_server):
        fake.reset()
    monkeypatch.setenv(KEY_ENV, "test-key")
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "test-key")
    common: dict[str, Any] = {"max_retries": 0}
    ModelRoute.objects.create(
        model_name="gem", provider="gemini", upstream_model="gemini-3-pro-preview", base_url=gemini_server.url,
        api_key_env=KEY_ENV, **common,
    )  # fmt: skip
    ModelRoute.objects.create(
        model_name="claude", provider="anthropic", upstream_model="claude-sonnet-4-6", base_url=anthropic_server.url,
        api_key_env="TEST_ANTHROPIC_KEY", **common,
    )  # fmt: skip
    yield
    for fake in (gemini_server, anthropic_server):
        fake.reset()


def dropped(call: Any) -> dict[str, Any]:
    """The tool call as LangChain and the AI SDK send it back: id, name and arguments only."""
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.function.name, "arguments": call.function.arguments},
    }


def gemini_call_then_text() -> tuple[Reply, Reply]:
    call = fg.response(
        fg.candidate(fg.call_part("get_weather", {"city": "Paris"}, signature=REAL)), usage_=fg.usage(5, 2)
    )
    return Reply(json=call), Reply(json=fg.text_response("Sunny."))


def model_turn(fake: Any) -> dict[str, Any]:
    return fg.canonical(fake.requests[-1].json)["contents"][1]["parts"][0]


def other_client(gateway: Any) -> openai.OpenAI:
    from django.contrib.auth import get_user_model

    from completions.keys import create_api_key

    user = get_user_model().objects.create_user(username="someone-else", password="pw-other-user-1")
    _, secret = create_api_key(user, "other")
    return openai.OpenAI(api_key=secret, base_url=gateway.url + "/v1", max_retries=0)


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_a_gemini_signature_comes_back_when_the_client_drops_it(
    client: Any, routes: None, gemini_server: Any, stream: bool
) -> None:
    first, second = gemini_call_then_text()
    gemini_server.script(Reply(events=[first.json]) if stream else first, second)
    if stream:
        chunks = list(
            client.chat.completions.create(model="gem", messages=[QUESTION], tools=[WEATHER_TOOL], stream=True)
        )
        head = next(c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls)
        call: Any = p.FunctionToolCall(
            id=head.id, type="function", function=p.FunctionCall(name="get_weather", arguments='{"city":"Paris"}')
        )
    else:
        call = (
            client.chat.completions.create(model="gem", messages=[QUESTION], tools=[WEATHER_TOOL])
            .choices[0]
            .message.tool_calls[0]
        )
    history = [
        QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [dropped(call)]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    assert (
        client.chat.completions.create(model="gem", messages=history, tools=[WEATHER_TOOL]).choices[0].message.content
        == "Sunny."
    )
    assert fg.decoded_signature(model_turn(gemini_server)) == REAL  # not Google's placeholder


def test_what_the_client_sends_wins_and_another_user_gets_nothing(
    client: Any, gateway: Any, routes: None, gemini_server: Any
) -> None:
    first, second = gemini_call_then_text()
    gemini_server.script(first, second, Reply(json=fg.text_response("Sunny.")))
    call = (
        client.chat.completions.create(model="gem", messages=[QUESTION], tools=[WEATHER_TOOL])
        .choices[0]
        .message.tool_calls[0]
    )
    own = {**dropped(call), "extra_content": {"google": {"thought_signature": "b3du"}}}  # base64 of "own"
    history: list[Any] = [
        QUESTION,
        {"role": "assistant", "tool_calls": [own]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    client.chat.completions.create(model="gem", messages=history, tools=[WEATHER_TOOL])
    assert fg.decoded_signature(model_turn(gemini_server)) == b"own"
    history[1] = {"role": "assistant", "tool_calls": [dropped(call)]}
    other_client(gateway).chat.completions.create(model="gem", messages=history, tools=[WEATHER_TOOL])
    assert fg.decoded_signature(model_turn(gemini_server)) == SKIP_SIGNATURE  # the other tenant's call id is no key


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_anthropic_thinking_blocks_come_back_when_the_client_drops_them(
    client: Any, routes: None, anthropic_server: Any, stream: bool
) -> None:
    msg = fa.message(
        [
            fa.thinking("Paris, so call the tool", "sig-1"),
            fa.tool_use("get_weather", {"city": "Paris"}, id="toolu_keep1"),
        ],
        "tool_use",
    )
    anthropic_server.script(
        fa.stream_reply(msg) if stream else Reply(json=msg), Reply(json=fa.message([fa.text("Sunny.")]))
    )
    ask: dict[str, Any] = {
        "model": "claude",
        "messages": [QUESTION],
        "tools": [WEATHER_TOOL],
        "reasoning_effort": "low",
    }
    answer = client.chat.completions.create(**ask, stream=stream)
    if stream:
        list(answer)
    call = {
        "id": "toolu_keep1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }
    history = [
        QUESTION,
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "toolu_keep1", "content": "sunny"},
    ]
    client.chat.completions.create(model="claude", messages=history, tools=[WEATHER_TOOL], reasoning_effort="low")
    assert anthropic_server.bodies[-1]["messages"][1]["content"][:2] == [
        {"type": "thinking", "thinking": "Paris, so call the tool", "signature": "sig-1"},
        {"type": "tool_use", "id": "toolu_keep1", "name": "get_weather", "input": {"city": "Paris"}},
    ]


def test_helpers() -> None:
    answer = {"choices": [{"message": {"tool_calls": [{"id": "a", "extra_content": {"x": 1}}, {"id": "b"}]}}]}
    assert tool_state.carried(tool_state.answer_calls(answer)) == {"a": {"x": 1}}
    assert tool_state.cache_key(7, "a" * 10_000) == tool_state.cache_key(7, "a" * 10_000)
    assert len(tool_state.cache_key(7, "a" * 10_000)) < 80 and tool_state.cache_key(7, "a") != tool_state.cache_key(
        8, "a"
    )
