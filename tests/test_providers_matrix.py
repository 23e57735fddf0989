"""One client program, four providers: the same openai SDK code (chat, stream, tools, embeddings)
runs against mock, Gemini, Anthropic and OpenAI-compatible routes from one routing file.

The fake upstreams here answer like models do: with tools offered they call `get_weather`; given
the tool's result they answer with it. So the client code is identical for every provider.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from completions.route_config import apply
from tests.conftest import log_rows
from tests.fakes import anthropic as fa
from tests.fakes import gemini as fg
from tests.fakes import openai_server as fo
from tests.fakes.base import Recorded, Reply
from tests.openapi import assert_valid, without_extensions

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def declared_tool(body: dict[str, Any]) -> str:
    """`get_weather` when the request declares it, else its first function (a model only calls
    functions it was given: the gateway refuses an undeclared call)."""
    names = [d["name"] for tool in body.get("tools") or [] for d in tool.get("functionDeclarations") or []]
    return "get_weather" if "get_weather" in names or not names else names[0]


class ToolGemini(fg.FakeGemini):
    def default_reply(self, request: Recorded) -> Reply:
        _, method = self.call_of(request) or ("", "")
        body = fg.canonical(request.json or {})
        if method in ("generateContent", "streamGenerateContent") and body.get("tools"):
            last = body["contents"][-1]["parts"]
            results = [p["functionResponse"]["response"] for p in last if "functionResponse" in p]
            if results:
                answer = fg.text_response(f"The tool said: {json.dumps(results[0])}")
            else:
                answer = fg.response(
                    fg.candidate(fg.call_part(declared_tool(body), {"city": "Paris"}, signature=b"sig")),
                    usage_=fg.usage(9, 4),
                )
            return Reply(events=[answer]) if method == "streamGenerateContent" else Reply(json=answer)
        return super().default_reply(request)


class ToolAnthropic(fa.FakeAnthropic):
    def default_reply(self, request: Recorded) -> Reply:
        body = request.json or {}
        if body.get("tools"):
            last = body["messages"][-1]["content"]
            results = (
                [b for b in last if isinstance(b, dict) and b.get("type") == "tool_result"]
                if isinstance(last, list)
                else []
            )
            if results:
                msg = fa.message([fa.text(f"The tool said: {json.dumps(results[0]['content'])}")])
            else:
                msg = fa.message([fa.tool_use("get_weather", {"city": "Paris"})], stop_reason="tool_use")
            return fa.stream_reply(msg) if body.get("stream") else Reply(json=msg)
        return super().default_reply(request)


class ToolOpenAI(fo.FakeOpenAI):
    def default_reply(self, request: Recorded) -> Reply:
        body = request.json or {}
        if request.path.endswith("/chat/completions") and body.get("tools"):
            last = body["messages"][-1]
            if last["role"] == "tool":
                text = f"The tool said: {last['content']}"
                return (
                    Reply(events=fo.text_events(text, usage=fo.USAGE))
                    if body.get("stream")
                    else Reply(json=fo.completion(text))
                )
            if body.get("stream"):
                return Reply(events=fo.tool_call_events("get_weather", '{"city": "Paris"}'))
            call = {
                "id": "call_x1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
            return Reply(json=fo.completion(None, tool_calls=[call]))
        return super().default_reply(request)


@pytest.fixture(scope="session")
def upstreams() -> Iterator[dict[str, Any]]:
    fakes = {"gemini": ToolGemini().start(), "anthropic": ToolAnthropic().start(), "openai": ToolOpenAI().start()}
    yield fakes
    for fake in fakes.values():
        fake.stop()


@pytest.fixture
def routed(gateway: Any, upstreams: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The four providers behind one gateway, from one routing file (as a deployment loads it)."""
    for fake in upstreams.values():
        fake.reset()
    for name in ("GEMINI_TEST_KEY", "ANTHROPIC_TEST_KEY", "OPENAI_TEST_KEY"):
        monkeypatch.setenv(name, "test-key")
    gemini, anthropic, openai_url = upstreams["gemini"].url, upstreams["anthropic"].url, upstreams["openai"].url
    routes = yaml.safe_load(
        f"""
routes:
  - {{model: chat-mock, provider: mock, upstream_model: mock-gpt-model}}
  - {{model: chat-gemini, provider: gemini, upstream_model: gemini-2.5-flash,
      base_url: "{gemini}", api_key_env: GEMINI_TEST_KEY}}
  - {{model: embed-gemini, provider: gemini, upstream_model: gemini-embedding-001,
      base_url: "{gemini}", api_key_env: GEMINI_TEST_KEY}}
  - {{model: chat-anthropic, provider: anthropic, upstream_model: claude-sonnet-4-6,
      base_url: "{anthropic}", api_key_env: ANTHROPIC_TEST_KEY}}
  - {{model: chat-openai, provider: openai, upstream_model: upstream-model-x,
      base_url: "{openai_url}/v1", api_key_env: OPENAI_TEST_KEY}}
"""
    )
    apply(routes)
    return upstreams


# The same program for every provider: what a user of the openai SDK writes.
def client_program(client: openai.OpenAI, model: str, embedding_model: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    question = [{"role": "user", "content": "Say hello"}]
    out["chat"] = client.chat.completions.with_raw_response.create(model=model, messages=question)
    out["stream"] = list(
        client.chat.completions.create(
            model=model, messages=question, stream=True, stream_options={"include_usage": True}
        )
    )

    messages: list[Any] = [{"role": "user", "content": "Paris"}]
    first = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL], tool_choice="required")
    call = first.choices[0].message.tool_calls[0]
    messages += [first.choices[0].message, {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"}]
    out["tool_call"] = first
    out["tool_answer"] = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    out["tool_stream"] = list(
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Paris"}],
            tools=[WEATHER_TOOL],
            tool_choice="required",
            stream=True,
        )
    )
    try:
        out["embeddings"] = client.embeddings.create(model=embedding_model, input=["first text", "second"])
    except openai.BadRequestError as exc:
        out["embeddings"] = exc
    return out


CASES = [
    pytest.param("chat-mock", "chat-mock", "mock", True, id="mock"),
    pytest.param("chat-gemini", "embed-gemini", "gemini", True, id="gemini"),
    pytest.param("chat-anthropic", "chat-anthropic", "anthropic", False, id="anthropic"),
    pytest.param("chat-openai", "chat-openai", "openai", True, id="openai-compatible"),
]


@pytest.mark.parametrize(("model", "embedding_model", "provider", "embeds"), CASES)
def test_same_client_code_on_every_provider(
    routed: dict[str, Any], client: openai.OpenAI, model: str, embedding_model: str, provider: str, embeds: bool
) -> None:
    out = client_program(client, model, embedding_model)

    raw = out["chat"]
    body = json.loads(raw.text)
    assert_valid(without_extensions(body), "CreateChatCompletionResponse")
    assert raw.headers["x-gateway-provider"] == provider
    answer = raw.parse()
    assert answer.choices[0].message.content and answer.choices[0].finish_reason == "stop"
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens > 0

    chunks = out["stream"]
    for chunk in chunks:
        assert_valid(without_extensions(chunk.model_dump(exclude_unset=True)), "CreateChatCompletionStreamResponse")
    assert chunks[0].choices[0].delta.role == "assistant" and len({c.id for c in chunks}) == 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0

    call = out["tool_call"].choices[0].message.tool_calls[0]
    assert out["tool_call"].choices[0].finish_reason == "tool_calls"
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    assert "city" in json.loads(call.function.arguments)
    assert "sunny" in out["tool_answer"].choices[0].message.content

    stream_calls = [
        tc
        for c in out["tool_stream"]
        if c.choices and c.choices[0].delta.tool_calls
        for tc in c.choices[0].delta.tool_calls
    ]
    assert stream_calls[0].id and stream_calls[0].function.name == "get_weather"
    assert "city" in json.loads("".join(tc.function.arguments or "" for tc in stream_calls))
    assert [c.choices[0].finish_reason for c in out["tool_stream"] if c.choices][-1] == "tool_calls"

    if embeds:
        vectors = out["embeddings"].data
        assert [v.index for v in vectors] == [0, 1] and all(len(v.embedding) > 0 for v in vectors)
    else:
        assert out["embeddings"].body["code"] == "unsupported_model"

    rows = log_rows(model__in={model, embedding_model})
    chat_rows = [r for r in rows if r.endpoint == "chat.completions"]
    (embed_row,) = [r for r in rows if r.endpoint == "embeddings"]
    assert len(chat_rows) == 5 and {r.provider for r in chat_rows} == {provider}
    assert all(r.status_code == 200 and r.total_tokens > 0 for r in chat_rows)
    assert embed_row.status_code == (200 if embeds else 400)
    if provider != "mock":
        assert len(routed[provider].requests) >= 5  # every call really reached the upstream over HTTP


def test_the_example_routing_file_names_every_provider() -> None:
    example = yaml.safe_load((Path(__file__).resolve().parents[1] / "routes.example.yaml").read_text())
    assert {r["provider"] for r in example["routes"]} == {"mock", "gemini", "anthropic", "openai"}


def test_seed_snippets_and_a_tool_loop_against_gemini_with_only_a_key(
    gateway: Any, api_key: str, upstreams: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With GEMINI_API_KEY set and nothing else configured: the seed's two snippets (base_url
    without /v1) and a tool-calling loop work against gemini-2.5-flash."""
    from completions.app import current

    fake = upstreams["gemini"]
    fake.reset()
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake.url)  # the SDK's own convention
    current().router.invalidate()
    client = openai.OpenAI(api_key=api_key, base_url=gateway.url, max_retries=0)
    r = client.chat.completions.create(
        model="gemini-2.5-flash", messages=[{"role": "user", "content": "is 1 + 1 equal to 2?"}]
    )
    assert r.choices[0].message.content == "echo: is 1 + 1 equal to 2?"
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="gemini-2.5-flash", messages=[{"role": "user", "content": "is 1 + 1 equal to 2?"}], stream=True
        )
        if c.choices
    )
    assert streamed == "echo: is 1 + 1 equal to 2?"
    messages: list[Any] = [{"role": "user", "content": "What's the weather in Paris?"}]
    first = client.chat.completions.create(model="gemini-2.5-flash", messages=messages, tools=[WEATHER_TOOL])
    call = first.choices[0].message.tool_calls[0]
    messages += [first.choices[0].message, {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"}]
    final = client.chat.completions.create(model="gemini-2.5-flash", messages=messages, tools=[WEATHER_TOOL])
    assert "sunny" in final.choices[0].message.content
    sent = fg.canonical(fake.requests[-1].json)
    model_turn = sent["contents"][1]["parts"][0]
    assert model_turn["functionCall"]["name"] == "get_weather" and fg.decoded_signature(model_turn) == b"sig"
    assert all(r.path.startswith("/v1/models/gemini-2.5-flash:") for r in fake.requests)
