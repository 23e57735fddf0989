"""The Responses API through the real server, driven by the official openai SDK and raw HTTP,
on the mock model and on each fake provider (Gemini, Anthropic, OpenAI-compatible) over HTTP.

Every answer is validated against `Response`, every stream event against its own schema
in OpenAI's spec, and every request leaves one log row with endpoint "responses".
"""

from __future__ import annotations

import asyncio
import json
import os
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from completions.providers.gemini import SKIP_SIGNATURE
from completions.route_config import apply
from tests.conftest import log_rows
from tests.fakes import anthropic as fa
from tests.fakes import gemini as fg
from tests.fakes import openai_server as fo
from tests.fakes.base import Reply
from tests.responses.events import assert_valid_response, assert_valid_stream, parse_sse

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}

PROVIDERS = [
    pytest.param("chat-mock", "mock", id="mock"),
    pytest.param("chat-gemini", "gemini", id="gemini"),
    pytest.param("chat-anthropic", "anthropic", id="anthropic"),
    pytest.param("chat-openai", "openai", id="openai-compatible"),
]


def stream_events(raw: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = raw.post("/v1/responses", json={**body, "stream": True})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    assert_valid_stream(events)
    return events


def deltas(events: list[dict[str, Any]], kind: str = "response.output_text.delta") -> str:
    return "".join(e["delta"] for e in events if e["type"] == kind)


# ---- the same program on every provider ---------------------------------------------------------


@pytest.mark.parametrize(("model", "provider"), PROVIDERS)
def test_text_stream_and_tool_round_trip_on_every_provider(
    routed: dict[str, Any], client: openai.OpenAI, raw: httpx.Client, model: str, provider: str
) -> None:
    answer = client.responses.with_raw_response.create(model=model, input="Say hello", instructions="Be brief.")
    assert answer.headers["x-gateway-provider"] == provider
    body = json.loads(answer.text)
    assert_valid_response(body)
    parsed = answer.parse()
    assert parsed.status == "completed" and parsed.output_text
    assert parsed.usage.total_tokens == parsed.usage.input_tokens + parsed.usage.output_tokens > 0

    events = stream_events(raw, {"model": model, "input": "Say hello"})
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    assert deltas(events) == final["output"][-1]["content"][0]["text"] != ""
    assert final["usage"]["output_tokens"] > 0

    # A tool round trip, each turn resending the whole history (as stateless clients do).
    for stream in (False, True):
        history: list[Any] = [{"role": "user", "content": "Paris"}]
        request = {"model": model, "input": history, "tools": [WEATHER], "tool_choice": "required", "store": False}
        first = (
            stream_events(raw, request)[-1]["response"] if stream else raw.post("/v1/responses", json=request).json()
        )
        assert_valid_response(first)
        calls = [item for item in first["output"] if item["type"] == "function_call"]
        assert len(calls) == 1 and calls[0]["name"] == "get_weather" and calls[0]["status"] == "completed"
        assert "city" in json.loads(calls[0]["arguments"])
        history += first["output"]
        history.append({"type": "function_call_output", "call_id": calls[0]["call_id"], "output": "sunny, 21C"})
        second = client.responses.create(model=model, input=history, tools=[WEATHER], store=False)
        assert "sunny" in second.output_text

    rows = log_rows(endpoint="responses", model=model)
    assert len(rows) == 6 and {r.provider for r in rows} == {provider}
    assert all(r.status_code == 200 and r.total_tokens > 0 for r in rows)
    assert [r.stream for r in rows] == [False, True, False, False, True, False]
    if provider != "mock":
        assert len(routed[provider].requests) == 6  # every turn really reached the upstream


def test_gemini_thought_signature_survives_a_stateless_tool_loop(routed: dict[str, Any], client: openai.OpenAI) -> None:
    """The signature leaves as a signed reasoning item before the call and goes back on the call."""
    first = client.responses.create(
        model="chat-gemini", input="Paris", tools=[WEATHER], store=False, include=["reasoning.encrypted_content"]
    )
    kinds = [item.type for item in first.output]
    assert kinds == ["reasoning", "function_call"]
    assert first.output[0].encrypted_content and first.output[0].summary == []
    call = first.output[1]
    follow_up = [
        {"role": "user", "content": "Paris"},
        *[item.model_dump(exclude_none=True) for item in first.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ]
    client.responses.create(model="chat-gemini", input=follow_up, tools=[WEATHER], store=False)
    sent = fg.canonical(routed["gemini"].requests[-1].json)
    model_turn = sent["contents"][1]["parts"][0]
    assert model_turn["functionCall"]["name"] == "get_weather"
    assert fg.decoded_signature(model_turn) == b"sig"


def test_a_forged_reasoning_item_is_not_sent_upstream(routed: dict[str, Any], client: openai.OpenAI) -> None:
    follow_up = [
        {"role": "user", "content": "Paris"},
        {"type": "reasoning", "id": "rs_x", "summary": [], "encrypted_content": "made-up"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    ]
    client.responses.create(model="chat-gemini", input=follow_up, tools=[WEATHER], store=False)
    model_turn = fg.canonical(routed["gemini"].requests[-1].json)["contents"][1]["parts"][0]
    assert fg.decoded_signature(model_turn) == SKIP_SIGNATURE  # what histories without one get


def test_anthropic_thinking_blocks_ride_back_through_a_stored_response(
    routed: dict[str, Any], client: openai.OpenAI
) -> None:
    fake = routed["anthropic"]
    msg = fa.message([fa.thinking("let me check", "sig-1"), fa.tool_use("get_weather", {"city": "Paris"})])
    msg["stop_reason"] = "tool_use"
    fake.script(fa.stream_reply(msg))
    with client.responses.stream(model="chat-anthropic", input="Paris", tools=[WEATHER]) as stream:
        first = stream.get_final_response()
    assert [item.type for item in first.output] == ["reasoning", "function_call"]
    call = first.output[1]
    client.responses.create(
        model="chat-anthropic",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[WEATHER],
    )
    assistant = fake.bodies[-1]["messages"][1]
    assert assistant["role"] == "assistant"
    assert assistant["content"][0] == {"type": "thinking", "thinking": "let me check", "signature": "sig-1"}
    assert assistant["content"][1]["type"] == "tool_use"


def test_previous_response_id_sends_the_stored_history_upstream(routed: dict[str, Any], client: openai.OpenAI) -> None:
    first = client.responses.create(model="chat-gemini", input="my name is Ada", instructions="Old rules.")
    second = client.responses.create(model="chat-gemini", input="what is my name?", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    sent = fg.canonical(routed["gemini"].requests[-1].json)
    texts = [part["text"] for turn in sent["contents"] for part in turn["parts"]]
    assert texts == ["my name is Ada", first.output_text, "what is my name?"]
    assert "systemInstruction" not in sent  # instructions are not carried over
    items = client.responses.input_items.list(second.id, order="asc").data
    assert [item.type for item in items] == ["message", "message", "message"]
    assert [item.role for item in items] == ["user", "assistant", "user"]


def test_an_upstream_stream_that_stops_early_is_a_failed_response(routed: dict[str, Any], raw: httpx.Client) -> None:
    fake = routed["openai"]
    fake.script(Reply(events=[fo.chunk({"role": "assistant", "content": ""}), fo.chunk({"content": "Hal"})]))
    events = stream_events(raw, {"model": "chat-openai", "input": "Say hello", "store": False})
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["status"] == "failed" and events[-1]["response"]["error"]["code"] == "server_error"
    (row,) = log_rows(endpoint="responses", model="chat-openai")
    assert row.status_code == 502 and row.error_code == "stream_incomplete"


def test_an_upstream_error_mid_stream_is_response_failed(routed: dict[str, Any], raw: httpx.Client) -> None:
    fake = routed["anthropic"]
    events = [fa.message_start(fa.message([])), fa.error_event("overloaded_error", "busy")]
    fake.script(Reply(events=events))
    out = stream_events(raw, {"model": "chat-anthropic", "input": "hi", "store": False})
    assert out[-1]["type"] == "response.failed" and out[-1]["response"]["error"]["message"]


# ---- the SDK's helpers on the mock model -----------------------------------------------------------


def test_sdk_stream_helper_and_stored_streams(client: openai.OpenAI) -> None:
    with client.responses.stream(model="mock-gpt-model", input="one two three") as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == final.output_text == "one two three"
    assert client.responses.retrieve(final.id).output_text == "one two three"  # stored before the last event


def test_structured_output_with_parse(client: openai.OpenAI) -> None:
    class City(BaseModel):
        name: str
        population: int

    parsed = client.responses.parse(model="mock-gpt-model", input="Paris", text_format=City)
    assert parsed.output_parsed == City(name="Paris", population=0)


def test_async_client_create_and_stream(async_client: openai.AsyncOpenAI) -> None:
    async def run() -> tuple[str, list[str]]:
        made = await async_client.responses.create(model="mock-gpt-model", input="hello async")
        stream = await async_client.responses.create(model="mock-gpt-model", input="hello stream", stream=True)
        kinds = [event.type async for event in stream]
        return made.output_text, kinds

    text, kinds = asyncio.run(run())
    assert text == "hello async"
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_item.done" in kinds


def test_retrieve_delete_and_paginated_input_items(client: openai.OpenAI, raw: httpx.Client) -> None:
    made = client.responses.create(
        model="mock-gpt-model",
        input=[
            {"role": "developer", "content": "rules"},
            {"role": "user", "content": [{"type": "input_text", "text": "first"}]},
            {"type": "message", "role": "user", "id": "msg_client1", "content": "second"},
        ],
        metadata={"ticket": "42"},
    )
    got = raw.get(f"/v1/responses/{made.id}").json()
    assert_valid_response(got)
    assert got["id"] == made.id and got["metadata"] == {"ticket": "42"}
    assert client.responses.retrieve(made.id).output_text == "second"

    page = raw.get(f"/v1/responses/{made.id}/input_items", params={"limit": 2}).json()
    from tests.openapi import assert_valid

    assert_valid(page, "ResponseItemList", strict=False)  # its items are allOf schemas
    assert page["data"][0]["id"] == "msg_client1" and len(page["data"]) == 2 and page["has_more"] is True
    rest = raw.get(f"/responses/{made.id}/input_items", params={"limit": 2, "after": page["last_id"]}).json()
    assert [i["role"] for i in rest["data"]] == ["developer"] and rest["has_more"] is False
    every = list(client.responses.input_items.list(made.id, order="asc", limit=1))
    assert [i.role for i in every] == ["developer", "user", "user"]  # the SDK follows `after` page by page

    assert raw.get(f"/v1/responses/{made.id}/input_items", params={"limit": 0}).json()["error"]["param"] == "limit"
    client.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(made.id)


def test_another_users_response_is_not_found(client: openai.OpenAI, gateway: Any) -> None:
    from django.contrib.auth import get_user_model

    from completions.keys import create_api_key

    made = client.responses.create(model="mock-gpt-model", input="mine")
    other = get_user_model().objects.create_user(username="someone-else")
    _, secret = create_api_key(other, "other")
    theirs = openai.OpenAI(api_key=secret, base_url=gateway.url + "/v1", max_retries=0)
    for attempt in (
        lambda: theirs.responses.retrieve(made.id),
        lambda: theirs.responses.delete(made.id),
        lambda: theirs.responses.input_items.list(made.id),
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()
    with pytest.raises(openai.NotFoundError) as exc:
        theirs.responses.create(model="mock-gpt-model", input="x", previous_response_id=made.id)
    assert exc.value.body["param"] == "previous_response_id"
    assert client.responses.retrieve(made.id).output_text == "mine"


def test_store_false_keeps_nothing(client: openai.OpenAI, raw: httpx.Client) -> None:
    made = client.responses.create(model="mock-gpt-model", input="secret", store=False)
    streamed = stream_events(raw, {"model": "mock-gpt-model", "input": "secret", "store": False})
    for response_id in (made.id, streamed[-1]["response"]["id"]):
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(response_id)
    from completions.models import StoredResponse

    assert not StoredResponse.objects.exists()


def test_namespaced_tools_come_back_with_their_own_names(client: openai.OpenAI, raw: httpx.Client) -> None:
    tools = [
        {"type": "namespace", "name": "multi_agent_v1", "description": "agents", "tools": [WEATHER]},
        {"type": "web_search", "external_web_access": False},
    ]
    response = raw.post(
        "/v1/responses", json={"model": "mock-gpt-model", "input": "Paris", "tools": tools, "tool_choice": "required"}
    )
    assert "web_search" in response.headers["x-gateway-warning"]
    (call,) = response.json()["output"]
    assert (call["name"], call["namespace"]) == ("get_weather", "multi_agent_v1")
    events = stream_events(
        raw, {"model": "mock-gpt-model", "input": "Paris", "tools": tools, "tool_choice": "required"}
    )
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert done[0]["name"] == "get_weather"
    history = [
        {"role": "user", "content": "Paris"},
        call,
        {"type": "function_call_output", "call_id": call["call_id"], "output": "rainy"},
    ]
    assert client.responses.create(model="mock-gpt-model", input=history, tools=tools).output_text == "rainy"


def test_max_output_tokens_makes_an_incomplete_response(client: openai.OpenAI, raw: httpx.Client) -> None:
    words = " ".join(f"w{i}" for i in range(40))
    made = client.responses.create(model="mock-gpt-model", input=words, max_output_tokens=16)
    assert made.status == "incomplete" and made.incomplete_details.reason == "max_output_tokens"
    events = stream_events(raw, {"model": "mock-gpt-model", "input": words, "max_output_tokens": 16})
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


@pytest.mark.parametrize(
    ("extra", "param", "needle"),
    [
        ({"bogus": 1}, "bogus", "Unrecognized request argument"),
        ({"temperature": 5}, "temperature", "less than or equal to 2"),
        ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type", "not supported"),
        ({"input": [{"role": "user", "content": [{"type": "input_txt", "text": "x"}]}]}, "input[0].content[0]", ""),
        ({"tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}}, "tool_choice", "web_search"),
        ({"tools": [{"type": "web_search"}], "tool_choice": "required"}, "tool_choice", "function tool"),
        ({"tools": [{"type": "function", "name": "bad name"}]}, "tools[0].name", "pattern"),
        ({"truncation": "auto"}, "truncation", "truncation"),
        ({"background": True}, "background", "Background"),
        ({"conversation": "conv_1"}, "conversation", "previous_response_id"),
        ({"reasoning": {"mode": "pro"}}, "reasoning.mode", "not supported"),
        ({"logit_bias": {}}, "logit_bias", "Unrecognized"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}, None, "file_id"),
        ({"top_logprobs": 2, "model": "chat-anthropic"}, "top_logprobs", "top_logprobs"),
        ({"text": {"format": {"type": "json_object"}}, "model": "chat-anthropic"}, "text.format", "`text.format`"),
        ({"tools": [WEATHER], "parallel_tool_calls": False, "model": "chat-gemini"}, "parallel_tool_calls", ""),
    ],
)
def test_bad_requests_are_400_naming_the_responses_param(
    routed: dict[str, Any], raw: httpx.Client, extra: dict[str, Any], param: str | None, needle: str
) -> None:
    response = raw.post("/v1/responses", json={"model": "mock-gpt-model", "input": "hi", **extra})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    else:
        assert error["param"].startswith("input[0].content[0]")
    assert needle in error["message"]
    (row,) = log_rows(endpoint="responses")
    assert row.status_code == 400


def test_errors_use_openai_envelope(raw: httpx.Client, gateway: Any) -> None:
    assert raw.post("/v1/responses", content=b"{nope").json()["error"]["code"] == "invalid_json"
    unknown = raw.post("/v1/responses", json={"model": "no-such-model", "input": "hi"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    anonymous = httpx.post(gateway.url + "/v1/responses", json={"model": "mock-gpt-model", "input": "hi"})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"
    assert raw.put("/v1/responses/resp_x").status_code == 405
    missing = raw.get("/v1/responses/resp_missing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "response_not_found"


def test_usage_and_cost_in_the_log_as_for_chat(gateway: Any, client: openai.OpenAI) -> None:
    apply(
        {
            "routes": [
                {"model": "priced", "provider": "mock", "upstream_model": "mock", "price": {"input": 2, "output": 8}}
            ]
        }
    )
    made = client.responses.create(model="priced", input="count these four words")
    with client.responses.stream(model="priced", input="count these four words") as stream:
        streamed = stream.get_final_response()
    rows = log_rows(endpoint="responses", model="priced")
    assert len(rows) == 2
    for row, response in zip(rows, (made, streamed), strict=True):
        assert (row.prompt_tokens, row.completion_tokens) == (response.usage.input_tokens, response.usage.output_tokens)
        assert row.cost == (Decimal(row.prompt_tokens) * 2 + Decimal(row.completion_tokens) * 8) / 1_000_000
        assert row.cost > 0 and not row.usage_estimated


def test_limits_apply_as_for_chat(gateway: Any, user: Any) -> None:
    from completions.keys import create_api_key

    _, secret = create_api_key(user, "rpm", rpm_limit=1)
    limited = openai.OpenAI(api_key=secret, base_url=gateway.url, max_retries=0)  # the form without /v1
    first = limited.responses.with_raw_response.create(model="mock-gpt-model", input="one")
    assert first.headers["x-ratelimit-limit-requests"] == "1"
    with pytest.raises(openai.RateLimitError) as exc:
        limited.responses.create(model="mock-gpt-model", input="two")
    assert exc.value.body["code"] == "rate_limit_exceeded"
    assert [r.status_code for r in log_rows(endpoint="responses")] == [200, 429]


def test_expired_responses_are_gone_and_purged(client: openai.OpenAI, settings: Any) -> None:
    from django.core.management import call_command

    from completions.models import StoredResponse

    settings.GATEWAY_RESPONSES_RETENTION_DAYS = 0
    kept = client.responses.create(model="mock-gpt-model", input="forever")
    settings.GATEWAY_RESPONSES_RETENTION_DAYS = 1e-9  # expires at once
    gone = client.responses.create(model="mock-gpt-model", input="briefly")
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(gone.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="mock-gpt-model", input="x", previous_response_id=gone.id)
    call_command("purge_responses", stdout=open(os.devnull, "w"))  # noqa: SIM115
    assert list(StoredResponse.objects.values_list("id", flat=True)) == [kept.id]
    assert client.responses.retrieve(kept.id).output_text == "forever"


def test_item_references_resolve_to_the_callers_stored_items(
    routed: dict[str, Any], client: openai.OpenAI, raw: httpx.Client
) -> None:
    """As the Vercel AI SDK sends earlier turns with `store`: by id, with or without `type`."""
    first = client.responses.create(model="chat-gemini", input="my name is Ada")
    question = [
        {"type": "item_reference", "id": client.responses.input_items.list(first.id).data[0].id},
        {"id": first.output[0].id},
        {"role": "user", "content": "what is my name?"},
    ]
    second = raw.post("/v1/responses", json={"model": "chat-gemini", "input": question})
    assert second.status_code == 200, second.text
    sent = fg.canonical(routed["gemini"].requests[-1].json)
    texts = [part["text"] for turn in sent["contents"] for part in turn["parts"]]
    assert texts == ["my name is Ada", first.output_text, "what is my name?"]
    items = client.responses.input_items.list(second.json()["id"], order="asc").data
    assert [i.role for i in items] == ["user", "assistant", "user"]

    missing = raw.post(
        "/v1/responses", json={"model": "chat-gemini", "input": [{"type": "item_reference", "id": "msg_x"}]}
    )
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "input[0].id"


def test_reasoning_text_from_an_openai_compatible_upstream_streams_as_a_summary(
    routed: dict[str, Any], raw: httpx.Client, client: openai.OpenAI
) -> None:
    fake = routed["openai"]
    thinking = [
        fo.chunk({"role": "assistant", "content": "", "reasoning_content": "Let me "}),
        fo.chunk({"reasoning_content": "think."}),
        fo.chunk({"content": "Done."}),
        fo.chunk({}, finish_reason="stop"),
        fo.usage_chunk(),
        fo.DONE,
    ]
    fake.script(Reply(events=thinking))
    events = stream_events(
        raw, {"model": "chat-openai", "input": "hi", "reasoning": {"effort": "low", "summary": "auto"}}
    )
    assert deltas(events, "response.reasoning_summary_text.delta") == "Let me think."
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["reasoning", "message"]
    assert final["output"][0]["summary"] == [{"type": "summary_text", "text": "Let me think."}]
    assert fake.requests[-1].json["reasoning_effort"] == "low"
    whole = fo.completion("Done.")
    whole["choices"][0]["message"]["reasoning_content"] = "Let me think."
    fake.script(Reply(json=whole))
    made = client.responses.create(model="chat-openai", input="hi")
    assert made.output[0].type == "reasoning" and made.output[0].summary[0].text == "Let me think."
    assert made.output_text == "Done."
