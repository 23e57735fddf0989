"""Gemini end to end: the real gateway, the real google-genai SDK and the fake Gemini server,
driven by the official openai SDK."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import log_rows
from tests.fakes.base import DROP, Gate, Reply
from tests.fakes.gemini import (
    FakeGemini,
    blocked_response,
    call_part,
    candidate,
    canonical,
    decoded_signature,
    embed_response,
    error_reply,
    response,
    text_part,
    text_response,
    usage,
)
from tests.openapi import assert_valid, without_extensions
from tests.providers.gemini.helpers import KEY_ENV, PNG, PNG_URL, SIGNATURE, WEATHER_TOOL, sent, sse_payloads, unb64


def test_e2e_exact_gemini_request(client: Any, fake: FakeGemini, gem: Any) -> None:
    fake.script(Reply(json=text_response('{"answer": "oui"}')))
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    client.chat.completions.create(
        model="gem",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "And this?"},
                    {"type": "image_url", "image_url": {"url": PNG_URL}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp"}},
                ],
            },
        ],
        temperature=0.3,
        top_p=0.9,
        seed=42,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        max_completion_tokens=256,
        stop=["END"],
        reasoning_effort="medium",
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    )
    request = fake.requests[-1]
    assert request.path == "/v1/models/gemini-2.5-flash:generateContent"
    assert request.headers["x-goog-api-key"] == "test-key"
    body = sent(fake)
    inline = body["contents"][2]["parts"][2].pop("inlineData")
    assert inline["mimeType"] == "image/png" and unb64(inline["data"]) == PNG
    assert body == {
        "contents": [
            {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
            {
                "role": "model",
                "parts": [
                    {"text": "Checking."},
                    {
                        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                        "thoughtSignature": "skip_thought_signature_validator",
                    },
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}},
                    {"text": "And this?"},
                    {},  # the inline image, checked above by its decoded bytes
                    {"fileData": {"fileUri": "https://example.com/cat.webp", "mimeType": "image/webp"}},
                ],
            },
        ],
        "systemInstruction": {"parts": [{"text": "You are terse."}, {"text": "Answer in French."}]},
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "get_weather",
                        "description": "Weather in a city",
                        "parametersJsonSchema": WEATHER_TOOL["function"]["parameters"],
                    }
                ]
            }
        ],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
        "generationConfig": {
            "temperature": 0.3,
            "topP": 0.9,
            "seed": 42,
            "presencePenalty": 0.5,
            "frequencyPenalty": 0.25,
            "maxOutputTokens": 256,
            "stopSequences": ["END"],
            "responseMimeType": "application/json",
            "responseJsonSchema": schema,
            "thinkingConfig": {"thinkingBudget": 8192},
        },
    }


def test_e2e_completion_is_spec_valid(client: Any, fake: FakeGemini, gem: Any) -> None:
    fake.script(
        Reply(
            json=response(candidate(text_part("Bonjour"), text_part(" !")), usage_=usage(12, 3, thoughts=5, cached=2))
        )
    )
    raw = client.chat.completions.with_raw_response.create(model="gem", messages=[{"role": "user", "content": "salut"}])
    body = json.loads(raw.text)
    assert_valid(body, "CreateChatCompletionResponse")
    completion = raw.parse()
    assert completion.model == "gemini-2.5-flash"
    assert completion.choices[0].message.content == "Bonjour !" and completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (
        12,
        8,
        20,
    )
    assert completion.usage.completion_tokens_details.reasoning_tokens == 5
    assert completion.usage.prompt_tokens_details.cached_tokens == 2
    (row,) = log_rows(request_id=raw.headers["x-request-id"])
    assert (row.provider, row.upstream_model, row.prompt_tokens, row.completion_tokens) == (
        "gemini",
        "gemini-2.5-flash",
        12,
        8,
    )


def test_e2e_base_url_with_api_version(client: Any, fake: FakeGemini, gateway: Any) -> None:
    from completions.models import ModelRoute

    ModelRoute.objects.create(
        model_name="gem-beta",
        provider="gemini",
        upstream_model="gemini-2.5-flash",
        base_url=fake.url + "/v1beta/",
        api_key_env=KEY_ENV,
        max_retries=0,
    )
    r = client.chat.completions.create(model="gem-beta", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "echo: hi"
    assert fake.requests[-1].path == "/v1beta/models/gemini-2.5-flash:generateContent"


def test_e2e_candidates_become_choices(client: Any, fake: FakeGemini, gem: Any) -> None:
    fake.script(
        Reply(json=response(candidate(text_part("A"), index=0), candidate(text_part("B"), index=1), usage_=usage(3, 2)))
    )
    r = client.chat.completions.create(model="gem", messages=[{"role": "user", "content": "x"}], n=2)
    assert [(c.index, c.message.content) for c in r.choices] == [(0, "A"), (1, "B")]
    assert sent(fake)["generationConfig"]["candidateCount"] == 2


def test_e2e_stream_chunks_are_spec_valid(raw: httpx.Client, fake: FakeGemini, gem: Any) -> None:
    fake.script(
        Reply(
            events=[
                response(candidate(text_part("Hel"), finish=None), usage_=usage(6, 1)),
                response(candidate(text_part("lo"), finish=None), usage_=usage(6, 2)),
                response(candidate(text_part("!"), finish="STOP"), usage_=usage(6, 3, thoughts=4)),
            ]
        )
    )
    body = {
        "model": "gem",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with raw.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        payloads = sse_payloads(resp)
    assert fake.requests[-1].path == "/v1/models/gemini-2.5-flash:streamGenerateContent"
    assert fake.requests[-1].query == {"alt": ["sse"]}
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(x) for x in payloads[:-1]]
    for chunk in chunks:
        assert_valid(chunk, "CreateChatCompletionStreamResponse")
    *content, usage_chunk = chunks
    assert content[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in content) == "Hello!"
    assert [c["choices"][0]["finish_reason"] for c in content] == [None, None, None, "stop"]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 7
    assert usage_chunk["usage"]["completion_tokens_details"] == {"reasoning_tokens": 4}


def test_e2e_streaming_is_real(client: Any, fake: FakeGemini, gem: Any) -> None:
    gate = Gate()
    fake.script(
        Reply(
            events=[
                response(candidate(text_part("first"), finish=None)),
                gate,
                response(candidate(text_part(" second"), finish="STOP"), usage_=usage(2, 2)),
            ]
        )
    )
    stream = client.chat.completions.create(model="gem", messages=[{"role": "user", "content": "x"}], stream=True)
    chunks = iter(stream)
    started = time.monotonic()
    first = next(chunks)  # the fake is holding the rest behind the gate
    assert first.choices[0].delta.content == "first" and first.choices[0].delta.role == "assistant"
    assert time.monotonic() - started < 10
    gate.open()
    rest = list(chunks)
    assert "".join(c.choices[0].delta.content or "" for c in rest if c.choices) == " second"
    assert rest[-1].choices[0].finish_reason == "stop"


def test_e2e_stream_slow_chunks_are_forwarded(async_client: Any, fake: FakeGemini, gem: Any) -> None:
    import asyncio

    from tests.fakes.base import Pause

    fake.script(
        Reply(
            events=[
                response(candidate(text_part("a"), finish=None)),
                Pause(0.3),
                response(candidate(text_part("b"), finish=None)),
                Pause(0.3),
                response(candidate(text_part("c"), finish="STOP")),
            ]
        )
    )

    async def run() -> list[tuple[float, str]]:
        stream = await async_client.chat.completions.create(
            model="gem", messages=[{"role": "user", "content": "x"}], stream=True
        )
        arrivals = [(time.monotonic(), c.choices[0].delta.content or "") async for c in stream if c.choices]
        await async_client.close()
        return arrivals

    arrivals = asyncio.run(run())
    texts = [text for _, text in arrivals if text]
    times = [at for at, text in arrivals if text]
    assert texts == ["a", "b", "c"]
    assert times[1] - times[0] > 0.2 and times[2] - times[1] > 0.2  # each chunk as it came, not all at the end


def test_e2e_tool_round_trip_carries_the_signature(client: Any, fake: FakeGemini, gem: Any) -> None:
    fake.script(
        Reply(
            json=response(
                candidate(call_part("get_weather", {"city": "Paris"}, signature=SIGNATURE)), usage_=usage(20, 5)
            )
        ),
        Reply(json=text_response("It is sunny in Paris.")),
    )
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    raw = client.chat.completions.with_raw_response.create(model="gem", messages=messages, tools=[WEATHER_TOOL])
    assert_valid(without_extensions(json.loads(raw.text)), "CreateChatCompletionResponse")
    r = raw.parse()
    assert r.choices[0].finish_reason == "tool_calls"
    (call,) = r.choices[0].message.tool_calls
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert base64.b64decode(call.model_extra["extra_content"]["google"]["thought_signature"]) == SIGNATURE
    messages.append(r.choices[0].message)  # the SDK object, as users do
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"})
    r = client.chat.completions.create(model="gem", messages=messages, tools=[WEATHER_TOOL])
    assert r.choices[0].message.content == "It is sunny in Paris."
    user, model, result = sent(fake)["contents"]
    assert user == {"role": "user", "parts": [{"text": "Weather in Paris?"}]}
    (call_part_,) = model["parts"]
    assert model["role"] == "model" and call_part_["functionCall"] == {"name": "get_weather", "args": {"city": "Paris"}}
    assert decoded_signature(call_part_) == SIGNATURE
    assert result == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "sunny, 21C"}}}],
    }


def test_e2e_streamed_tool_call(raw: httpx.Client, fake: FakeGemini, gem: Any) -> None:
    fake.script(
        Reply(
            events=[
                response(candidate(call_part("get_weather", {"city": "Rome"}, signature=SIGNATURE)), usage_=usage(9, 4))
            ]
        )
    )
    body = {
        "model": "gem",
        "messages": [{"role": "user", "content": "Rome?"}],
        "tools": [WEATHER_TOOL],
        "stream": True,
        "tool_choice": "required",
    }
    with raw.stream("POST", "/v1/chat/completions", json=body) as resp:
        payloads = sse_payloads(resp)
    chunks = [json.loads(x) for x in payloads[:-1]]
    for chunk in chunks:
        assert_valid(without_extensions(chunk), "CreateChatCompletionStreamResponse")
    head = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert head["function"]["name"] == "get_weather" and head["id"].startswith("call_")
    assert base64.b64decode(head["extra_content"]["google"]["thought_signature"]) == SIGNATURE
    assert chunks[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] == '{"city":"Rome"}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert sent(fake)["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


ERROR_CASES = [
    (
        error_reply(400, "INVALID_ARGUMENT", "Invalid value at 'generation_config'"),
        openai.BadRequestError,
        400,
        "upstream_invalid_request",
    ),
    (
        error_reply(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
        openai.AuthenticationError,
        401,
        "upstream_invalid_credential",
    ),
    (
        error_reply(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."),
        openai.PermissionDeniedError,
        403,
        "upstream_permission_denied",
    ),
    (
        error_reply(404, "NOT_FOUND", "models/gemini-9 is not found for API version v1"),
        openai.NotFoundError,
        404,
        "model_not_found",
    ),
    (
        error_reply(
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded.",
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"},
        ),
        openai.RateLimitError,
        429,
        "rate_limit_exceeded",
    ),
    (
        error_reply(500, "INTERNAL", "An internal error has occurred."),
        openai.InternalServerError,
        502,
        "upstream_error",
    ),
    (
        error_reply(503, "UNAVAILABLE", "The model is overloaded."),
        openai.InternalServerError,
        503,
        "upstream_overloaded",
    ),
]
ERROR_IDS = ["400", "401", "403", "404", "429", "500", "503"]


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("reply, exc_class, status, code", ERROR_CASES, ids=ERROR_IDS)
def test_e2e_upstream_errors(
    client: Any, fake: FakeGemini, gem: Any, reply: Reply, exc_class: type, status: int, code: str, stream: bool
) -> None:
    fake.script(reply)
    with pytest.raises(exc_class) as caught:
        result = client.chat.completions.create(model="gem", messages=[{"role": "user", "content": "x"}], stream=stream)
        if stream:
            list(result)
    err = caught.value
    assert err.status_code == status and err.code == code
    assert_valid(err.response.json(), "ErrorResponse")
    assert "test-key" not in err.response.text
    if status == 429:
        assert err.response.headers["retry-after"] == "17"
    assert len(fake.requests) == 1


def test_e2e_wrong_api_key_is_an_upstream_credential_error(
    client: Any, fake: FakeGemini, gem: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from completions.models import ModelRoute

    monkeypatch.setenv("WRONG_GEMINI_KEY", "not-the-key-123")
    ModelRoute.objects.create(
        model_name="gem-bad",
        provider="gemini",
        upstream_model="gemini-2.5-flash",
        base_url=fake.url,
        api_key_env="WRONG_GEMINI_KEY",
        max_retries=0,
    )
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="gem-bad", messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "upstream_invalid_credential"
    assert "credential" in caught.value.message and "not-the-key-123" not in caught.value.response.text
    assert (
        fake.requests[-1].headers["x-goog-api-key"] == "not-the-key-123"
    )  # Gemini answered its real 400 API_KEY_INVALID


def test_e2e_missing_credential_is_a_503(client: Any, fake: FakeGemini, gateway: Any) -> None:
    from completions.models import ModelRoute

    ModelRoute.objects.create(
        model_name="gem-nokey",
        provider="gemini",
        upstream_model="gemini-2.5-flash",
        base_url=fake.url,
        api_key_env="UNSET_GEMINI_KEY_FOR_TEST",
        max_retries=0,
    )
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="gem-nokey", messages=[{"role": "user", "content": "x"}])
    assert (caught.value.status_code, caught.value.code) == (503, "upstream_credential_missing")
    assert fake.requests == []


def test_e2e_timeout_is_a_504(client: Any, fake: FakeGemini, gateway: Any) -> None:
    from completions.models import ModelRoute

    ModelRoute.objects.create(
        model_name="gem-slow",
        provider="gemini",
        upstream_model="gemini-2.5-flash",
        base_url=fake.url,
        api_key_env=KEY_ENV,
        max_retries=0,
        first_byte_timeout=0.5,
        idle_timeout=0.5,
    )
    fake.script(Reply(json=text_response("late"), delay=3))
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="gem-slow", messages=[{"role": "user", "content": "x"}])
    assert (caught.value.status_code, caught.value.code) == (504, "upstream_timeout")
    assert time.monotonic() - started < 2.5


def test_e2e_unreachable_upstream_is_a_502(client: Any, fake: FakeGemini, gateway: Any) -> None:
    from completions.models import ModelRoute
    from tests.conftest import free_port

    ModelRoute.objects.create(
        model_name="gem-down",
        provider="gemini",
        upstream_model="gemini-2.5-flash",
        base_url=f"http://127.0.0.1:{free_port()}",
        api_key_env=KEY_ENV,
        max_retries=0,
    )
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="gem-down", messages=[{"role": "user", "content": "x"}])
    assert (caught.value.status_code, caught.value.code) == (502, "upstream_unreachable")


def test_e2e_blocked_prompt(client: Any, fake: FakeGemini, gem: Any) -> None:
    fake.script(Reply(json=blocked_response("SAFETY")), Reply(events=[blocked_response("BLOCKLIST")]))
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            result = client.chat.completions.create(
                model="gem", messages=[{"role": "user", "content": "x"}], stream=stream
            )
            if stream:
                list(result)
        assert caught.value.code == "content_filter"
        assert ("BLOCKLIST" if stream else "SAFETY") in caught.value.message


def test_e2e_unsupported_parameter_never_reaches_gemini(client: Any, fake: FakeGemini, gem: Any) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gem", messages=[{"role": "user", "content": "x"}], logit_bias={"1": 5})
    assert (caught.value.code, caught.value.param) == ("unsupported_parameter", "logit_bias")
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="gem",
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/pic"}}]}
            ],
        )
    assert caught.value.param == "messages[0].content[0].image_url.url"
    assert fake.requests == []


@pytest.mark.parametrize("failure", ["error_event", "drop"])
def test_e2e_failure_after_stream_started(raw: httpx.Client, fake: FakeGemini, gem: Any, failure: str) -> None:
    tail: Any = (
        {"error": {"code": 500, "message": "backend died", "status": "INTERNAL"}} if failure == "error_event" else DROP
    )
    fake.script(Reply(events=[response(candidate(text_part("partial"), finish=None)), tail]))
    body = {"model": "gem", "messages": [{"role": "user", "content": "x"}], "stream": True}
    with raw.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        payloads = sse_payloads(resp)
    first, err, done = payloads
    assert json.loads(first)["choices"][0]["delta"]["content"] == "partial"
    assert_valid(json.loads(err), "ErrorResponse")
    assert json.loads(err)["error"]["code"] == "upstream_error"
    assert done == "[DONE]"
    (row,) = log_rows(request_id=resp.headers["x-request-id"])
    assert row.error_code == "upstream_error" and row.stream


def test_e2e_client_disconnect_closes_the_upstream_stream(client: Any, fake: FakeGemini, gem: Any) -> None:
    gate = Gate()
    fake.script(
        Reply(
            events=[response(candidate(text_part("first"), finish=None)), gate, response(candidate(text_part("never")))]
        )
    )
    with client.chat.completions.with_streaming_response.create(
        model="gem", messages=[{"role": "user", "content": "x"}], stream=True
    ) as resp:
        request_id = resp.headers["x-request-id"]
        first = next(iter(resp.parse()))
        assert first.choices[0].delta.content == "first"
    # The client is gone; the gateway must hang up on Gemini (not wait for the gate).
    deadline = time.monotonic() + 10
    while fake.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.disconnects == 1
    gate.open()
    deadline = time.monotonic() + 10
    rows: list[Any] = []
    while not rows and time.monotonic() < deadline:
        rows = log_rows(request_id=request_id)
        time.sleep(0.05)
    (row,) = rows
    assert row.client_disconnected and row.provider == "gemini"


def test_e2e_builtin_routes_follow_gemini_api_key(
    client: Any, fake: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    from completions.app import current

    router = current().router
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake.url)
    router.invalidate()
    assert "gemini-2.5-flash" in {m.id for m in client.models.list()}
    r = client.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "hello there"}])
    assert r.choices[0].message.content == "echo: hello there"
    assert fake.requests[-1].path == "/v1/models/gemini-2.5-flash:generateContent"
    assert fake.requests[-1].headers["x-goog-api-key"] == "test-key"

    monkeypatch.delenv("GEMINI_API_KEY")
    router.invalidate()
    assert "gemini-2.5-flash" not in {m.id for m in client.models.list()}
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "hello"}])
    assert caught.value.code == "model_not_found"


def test_e2e_embeddings(client: Any, fake: FakeGemini, gateway: Any) -> None:
    from completions.models import ModelRoute

    ModelRoute.objects.create(
        model_name="gem-embed",
        provider="gemini",
        upstream_model="gemini-embedding-001",
        base_url=fake.url,
        api_key_env=KEY_ENV,
        max_retries=0,
    )
    fake.script(
        Reply(json=embed_response([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]], prompt_tokens=5)),
        Reply(json=embed_response([[1.0, 1.0, 1.0]])),
    )
    raw = client.embeddings.with_raw_response.create(
        model="gem-embed", input=["hello world", "bye"], dimensions=3, encoding_format="float"
    )
    body = json.loads(raw.text)
    assert_valid(body, "CreateEmbeddingResponse")
    assert [d["embedding"] for d in body["data"]] == [[0.6, 0.8, 0.0], [0.0, 0.0, 1.0]]  # unit length, as OpenAI's
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    request = fake.requests[-1]
    assert request.path == "/v1/models/gemini-embedding-001:batchEmbedContents"
    assert [(r["content"]["parts"], r["outputDimensionality"]) for r in canonical(request.json)["requests"]] == [
        ([{"text": "hello world"}], 3),
        ([{"text": "bye"}], 3),
    ]
    # Without a token count from Gemini, the gateway counts; the SDK's default base64 round-trips.
    result = client.embeddings.create(model="gem-embed", input="one two three")
    assert result.usage.prompt_tokens == 3
    assert result.data[0].embedding == pytest.approx([3**-0.5] * 3, rel=1e-6)


def two_calls() -> dict[str, Any]:
    return response(
        candidate(
            call_part("get_weather", {"city": "Paris"}, signature=SIGNATURE), call_part("get_weather", {"city": "Rome"})
        ),
        usage_=usage(9, 6),
    )


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_e2e_parallel_tool_calls_false_keeps_the_first_call(
    client: Any, fake: FakeGemini, gem: Any, stream: bool
) -> None:
    """LlamaIndex and LangChain's function-calling structured output send `parallel_tool_calls: false`."""
    fake.script(Reply(events=[two_calls()]) if stream else Reply(json=two_calls()))
    args: dict[str, Any] = {"model": "gem", "messages": [{"role": "user", "content": "Paris and Rome"}]}
    args.update(tools=[WEATHER_TOOL], parallel_tool_calls=False, stream=stream)
    raw = client.chat.completions.with_raw_response.create(**args)
    assert raw.headers["x-gateway-tool-calls-dropped"] == "1"
    if stream:
        deltas = [
            tc
            for c in raw.parse()
            if c.choices and c.choices[0].delta.tool_calls
            for tc in c.choices[0].delta.tool_calls
        ]
        assert {tc.index for tc in deltas} == {0}
        assert "".join(tc.function.arguments or "" for tc in deltas) == '{"city":"Paris"}'
    else:
        (call,) = raw.parse().choices[0].message.tool_calls
        assert json.loads(call.function.arguments) == {"city": "Paris"}
    # Without the flag both calls come through, and nothing is said.
    fake.script(Reply(json=two_calls()))
    raw = client.chat.completions.with_raw_response.create(
        model="gem", messages=[{"role": "user", "content": "Paris and Rome"}], tools=[WEATHER_TOOL]
    )
    assert len(raw.parse().choices[0].message.tool_calls) == 2 and "x-gateway-tool-calls-dropped" not in raw.headers


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_e2e_a_call_to_an_undeclared_function_is_a_clean_502(
    client: Any, fake: FakeGemini, gem: Any, stream: bool
) -> None:
    answer = response(candidate(call_part("google_search", {"q": "weather"})), usage_=usage(9, 3))
    fake.script(Reply(events=[answer]) if stream else Reply(json=answer))
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(
            model="gem", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER_TOOL], stream=stream
        )
    assert (caught.value.status_code, caught.value.code) == (502, "upstream_undeclared_tool_call")
    assert "`google_search`" in caught.value.message
    assert caught.value.response.headers["x-gateway-provider"] == "gemini"
    assert caught.value.response.headers["x-gateway-attempts"] == "1"
