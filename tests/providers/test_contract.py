"""The provider contract: a request is prepared (checked and translated) once per route, and every
attempt on that route sends that same prepared request.

Through the gateway with a counting provider double: retries reuse one `Prepared`; an unsupported
parameter is the client's 400 on the requested model's own route and skips a fallback route. Against
each real provider and its fake: a `Prepared` sent twice puts the same bytes on the wire, so reusing it
across retries is safe with the SDKs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from completions import protocol as p
from completions.providers import Provider, provider_class, register
from completions.providers.base import Route
from tests.conftest import log_rows
from tests.fakes import anthropic as fa
from tests.fakes import gemini as fg
from tests.fakes import openai_server as fo
from tests.fakes.base import FakeUpstream
from tests.fakes.counting import CountingProvider

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def counting(gateway: Any, settings: Any) -> Iterator[dict[str, list[tuple[str, int]]]]:
    from completions.models import ModelRoute

    register("counting", "tests.fakes.counting.CountingProvider")
    settings.GATEWAY_RETRY_BASE_SECONDS = 0.01
    CountingProvider.log.clear()

    def route(model: str, **fields: Any) -> None:
        ModelRoute.objects.create(model_name=model, provider="counting", upstream_model=f"up-{model}", **fields)

    route("flaky", max_retries=2, options={"fail": 2, "breaker_failures": 100})
    route("picky", max_retries=0, options={"reject": ["seed"]})
    route("down", max_retries=0, fallbacks=["picky", "lenient"], options={"fail": 100, "breaker_failures": 100})
    route("lenient", max_retries=0)
    yield CountingProvider.log


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_retries_send_the_request_prepared_once(client: Any, counting: Any, stream: bool) -> None:
    result = client.chat.completions.create(model="flaky", messages=HI, stream=stream)
    text = "".join(c.choices[0].delta.content or "" for c in result if c.choices) if stream else None
    assert (text if stream else result.choices[0].message.content) == "served by flaky"
    entries = counting["flaky"]
    assert [kind for kind, _ in entries] == ["prepare", "attempt", "attempt", "attempt"]
    assert len({prepared for _, prepared in entries}) == 1  # one Prepared, sent three times
    (row,) = log_rows(model="flaky")
    assert [a["ok"] for a in row.attempts] == [False, False, True]


def test_unsupported_parameter_on_the_requested_route_is_the_clients_400(client: Any, counting: Any) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="picky", messages=HI, seed=7)
    assert (caught.value.code, caught.value.param) == ("unsupported_parameter", "seed")
    assert "picky" not in counting  # rejected while preparing: never attempted


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_unsupported_parameter_on_a_fallback_route_skips_it(client: Any, counting: Any, stream: bool) -> None:
    result = client.chat.completions.create(model="down", messages=HI, seed=7, stream=stream)
    text = "".join(c.choices[0].delta.content or "" for c in result if c.choices) if stream else None
    assert (text if stream else result.choices[0].message.content) == "served by lenient"
    assert "picky" not in counting  # its prepare raised before being logged: never attempted
    assert [kind for kind, _ in counting["lenient"]] == ["prepare", "attempt"]
    (row,) = log_rows(model="down")
    assert [(a["model"], a["ok"], a.get("skipped")) for a in row.attempts] == [
        ("down", False, None),
        ("picky", False, "unsupported parameters"),
        ("lenient", True, None),
    ]


# ---- one Prepared, sent twice, same bytes: each real provider against its fake -------------------


@pytest.fixture
def upstream(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    gemini_server: fg.FakeGemini,
    anthropic_server: fa.FakeAnthropic,
    openai_server: fo.FakeOpenAI,
) -> Iterator[tuple[Provider, FakeUpstream]]:
    name = request.param
    fake: FakeUpstream = {"gemini": gemini_server, "anthropic": anthropic_server, "openai": openai_server}[name]
    fake.reset()
    monkeypatch.setenv("CONTRACT_UPSTREAM_KEY", "test-key")  # the key the fake Gemini accepts
    route = Route(
        model_name="m",
        provider=name,
        upstream_model="gemini-2.5-flash" if name == "gemini" else "some-model",
        base_url=fake.url + ("/v1" if name == "openai" else ""),
        api_key_env="CONTRACT_UPSTREAM_KEY",
    )
    yield provider_class(name)(route), fake
    fake.reset()


REQUEST = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        {
            "role": "assistant",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ],
    "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}],
    "temperature": 0.5,
    "max_tokens": 50,
    "stop": ["END"],
}


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("upstream", ["gemini", "anthropic", "openai"], indirect=True)
def test_a_prepared_request_sent_twice_is_the_same_bytes(upstream: tuple[Provider, FakeUpstream], stream: bool) -> None:
    provider, fake = upstream
    prepared = provider.prepare(p.validate(p.ChatCompletionRequest, {**REQUEST, "stream": stream}))

    async def twice() -> None:
        try:
            for _ in range(2):
                if stream:
                    assert [chunk async for chunk in provider.stream(prepared)]
                else:
                    assert (await provider.complete(prepared))["choices"]
        finally:
            await provider.aclose()

    asyncio.run(twice())
    first, second = fake.requests
    assert first.path == second.path and first.body == second.body


# ---- one stream-translator shape ------------------------------------------------------------------


def test_every_stream_translator_has_the_one_shape() -> None:
    """feed(event) -> chunks and finish() -> chunks, for each provider that translates a stream."""
    import inspect

    from completions.providers import anthropic, gemini, openai_compat

    for translator in (gemini.StreamTranslator, anthropic.StreamTranslator, openai_compat.StreamTranslator):
        feed, finish = inspect.signature(translator.feed), inspect.signature(translator.finish)
        assert (len(feed.parameters), list(finish.parameters)) == (2, ["self"]), translator
        assert feed.return_annotation == finish.return_annotation == "list[dict[str, Any]]", translator


# ---- one error-mapping idiom ------------------------------------------------------------------------


def test_upstream_failures_raises_the_mapped_error_and_lets_the_rest_pass() -> None:
    from completions.errors import InvalidRequest, UpstreamError
    from completions.providers.base import upstream_failures

    def mapping(exc: Exception) -> UpstreamError | None:
        return UpstreamError("mapped") if isinstance(exc, ConnectionError) else None

    with pytest.raises(UpstreamError) as caught, upstream_failures(mapping):
        raise ConnectionError("refused")
    assert caught.value.message == "mapped" and isinstance(caught.value.__cause__, ConnectionError)
    for passing in (KeyError("bug"), StopAsyncIteration(), InvalidRequest("already a gateway error")):
        with pytest.raises(type(passing)), upstream_failures(mapping):
            raise passing


def test_each_provider_maps_only_upstream_failures() -> None:
    from completions.providers import anthropic, gemini, openai_compat

    for module in (gemini, anthropic, openai_compat):
        assert module.upstream_error(KeyError("a bug, not an upstream failure")) is None, module.__name__


# ---- one parser for what clients send inside messages ----------------------------------------------


@pytest.mark.parametrize(
    "bad, param, message",
    [
        (
            {"tool_calls": [{"id": "c", "type": "function", "function": {"name": "w", "arguments": "{nope"}}]},
            "messages[1].tool_calls[0].function.arguments",
            "The tool call's `arguments` must be a JSON object (a string of JSON text).",
        ),
        (
            {"tool_calls": [{"id": "c", "type": "function", "function": {"name": "w", "arguments": "[1]"}}]},
            "messages[1].tool_calls[0].function.arguments",
            "The tool call's `arguments` must be a JSON object (a string of JSON text).",
        ),
    ],
    ids=["not-json", "not-an-object"],
)
def test_bad_tool_call_arguments_are_one_400_whichever_provider(bad: dict[str, Any], param: str, message: str) -> None:
    from completions.errors import InvalidRequest

    body = {"model": "m", "messages": [{"role": "user", "content": "x"}, {"role": "assistant", **bad}]}
    for name in ("gemini", "anthropic"):
        provider = provider_class(name)(Route(model_name="m", provider=name, upstream_model="gemini-2.5-flash"))
        with pytest.raises(InvalidRequest) as caught:
            provider.prepare(p.validate(p.ChatCompletionRequest, body))
        assert (caught.value.param, caught.value.message) == (param, message), name


@pytest.mark.parametrize(
    "url, error",
    [
        ("data:text/plain;base64,@@@", "This value is not valid base64."),
        ("data:text/plain;base64", "This data: URL has no comma separating its header from its data."),
    ],
)
def test_broken_data_urls_are_one_400_whichever_provider(url: str, error: str) -> None:
    from completions.errors import InvalidRequest

    content = [{"type": "file", "file": {"file_data": url}}]
    body = {"model": "m", "messages": [{"role": "user", "content": content}]}
    for name in ("gemini", "anthropic"):
        provider = provider_class(name)(Route(model_name="m", provider=name, upstream_model="gemini-2.5-flash"))
        with pytest.raises(InvalidRequest) as caught:
            provider.prepare(p.validate(p.ChatCompletionRequest, body))
        assert (caught.value.param, caught.value.message) == ("messages[0].content[0].file.file_data", error), name
