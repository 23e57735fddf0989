"""Every failure answers OpenAI's error envelope with OpenAI's status, and the SDK raises the matching class."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import log_rows
from tests.openapi import assert_valid

MESSAGES = [{"role": "user", "content": "hello"}]


def envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    body = response.json()
    assert_valid(body, "ErrorResponse")
    assert "Traceback" not in response.text and "<html" not in response.text.lower()
    return body["error"]


@pytest.mark.parametrize(
    ("kwargs", "param", "needle"),
    [
        ({"extra_body": {"foo": 1}}, "foo", "Unrecognized request argument supplied: foo"),
        ({"temperature": 3}, "temperature", "less than or equal to 2"),
        ({"top_p": -0.1}, "top_p", "greater than or equal to 0"),
        ({"n": 0}, "n", "greater than or equal to 1"),
        ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"presence_penalty": 2.5}, "presence_penalty", "less than or equal to 2"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
        ({"top_logprobs": 3}, "top_logprobs", "requires `logprobs`"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "only allowed when 'stream'"),
        ({"tool_choice": "auto"}, "tool_choice", "only allowed when `tools`"),
        ({"response_format": {"type": "yaml"}}, "response_format", "does not match"),
        ({"web_search_options": {}}, "web_search_options", "not supported by model `mock-gpt-model`"),
        # The mock honours json_schema (for structured output); logit_bias it can't.
        ({"logit_bias": {"50256": -100}}, "logit_bias", "not supported by model `mock-gpt-model`"),
    ],
)
def test_bad_parameters_are_400_naming_the_param(client: Any, kwargs: dict[str, Any], param: str, needle: str) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="mock-gpt-model", messages=MESSAGES, **kwargs)
    err = exc.value.body
    assert exc.value.status_code == 400
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert needle in err["message"]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([], "messages"),
        ([{"role": "user"}], "messages[0].content"),
        ([{"role": "wizard", "content": "x"}], "messages[0]"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x", "detail": "huge"}}]}],
            "messages[0].content[0].image_url.detail",
        ),
        ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id"),
        ([{"role": "user", "content": "x", "colour": "red"}], "messages[0].colour"),
    ],
)
def test_bad_messages_name_the_nested_param(client: Any, messages: Any, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="mock-gpt-model", messages=messages)
    assert exc.value.body["param"] == param


def test_unknown_model_is_404_model_not_found(client: Any) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="gpt-nonexistent", messages=MESSAGES)
    assert exc.value.body["code"] == "model_not_found"
    assert exc.value.body["param"] == "model"
    (row,) = log_rows(model="gpt-nonexistent")
    assert (row.status_code, row.error_code) == (404, "model_not_found")


def test_auth_failures_are_401_with_distinct_messages(gateway: Any, api_key: str, user: Any) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from completions.keys import create_api_key, revoke_api_key

    def fail(key: str) -> dict[str, Any]:
        sdk = openai.OpenAI(api_key=key, base_url=gateway.url + "/v1", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as exc:
            sdk.chat.completions.create(model="mock-gpt-model", messages=MESSAGES)
        assert exc.value.status_code == 401
        assert exc.value.body["code"] == "invalid_api_key"
        return exc.value.body

    _expired, expired_secret = create_api_key(user, "old", expires_at=timezone.now() - timedelta(seconds=1))
    revoked, revoked_secret = create_api_key(user, "gone")
    revoke_api_key(revoked)
    unknown = fail("sk-gw-" + "A" * 43)
    other = fail("not-even-our-format")
    expired_msg = fail(expired_secret)["message"]
    revoked_msg = fail(revoked_secret)["message"]
    missing = envelope(
        httpx.post(gateway.url + "/v1/chat/completions", json={"model": "mock-gpt-model", "messages": MESSAGES}), 401
    )
    messages = {unknown["message"], expired_msg, revoked_msg, missing["message"]}
    assert len(messages) == 4
    assert "Incorrect API key provided" in unknown["message"] and "A" * 20 not in unknown["message"]
    assert "Incorrect API key provided" in other["message"]
    assert "expired" in expired_msg and "revoked" in revoked_msg and "didn't provide" in missing["message"]
    # x-api-key works as well as Bearer.
    ok = httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "mock-gpt-model", "messages": MESSAGES},
        headers={"x-api-key": api_key},
    )
    assert ok.status_code == 200
    rows = log_rows(status_code=401)
    assert len(rows) == 5 and all(r.error_code == "invalid_api_key" for r in rows)
    assert {r.api_key_id for r in rows} == {None}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"model": "mock-gpt-model", "messages": [', "could not parse the JSON"),
        (b"[1, 2]", "must be a JSON object, not list"),
        (b'"text"', "must be a JSON object, not str"),
        (b"null", "must be a JSON object, not null"),
        (b"", "body is empty"),
    ],
)
def test_malformed_bodies(raw: httpx.Client, body: bytes, needle: str) -> None:
    err = envelope(raw.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"}), 400)
    assert needle in err["message"] and err["type"] == "invalid_request_error"


def test_oversized_body_is_413(raw: httpx.Client, settings: Any) -> None:
    settings.GATEWAY_MAX_BODY_BYTES = 10_000
    big = json.dumps({"model": "mock-gpt-model", "messages": [{"role": "user", "content": "x" * 20_000}]})
    err = envelope(raw.post("/v1/chat/completions", content=big), 413)
    assert "larger than the 10000 bytes" in err["message"]

    # Without a Content-Length (chunked upload) the limit holds too.
    def chunks() -> Any:
        for _ in range(30):
            yield b"x" * 1000

    envelope(raw.post("/v1/chat/completions", content=chunks()), 413)


def test_unknown_url_and_wrong_method(raw: httpx.Client, client: Any) -> None:
    err = envelope(raw.post("/v1/nothing-here", json={}), 404)
    assert "Invalid URL (POST /v1/nothing-here)" in err["message"]
    envelope(raw.get("/"), 404)
    err = envelope(raw.get("/v1/chat/completions"), 405)
    assert "Invalid method" in err["message"]
    envelope(raw.delete("/v1/models"), 405)
    with pytest.raises(openai.NotFoundError):
        client.get("/nothing-here", cast_to=object)


def test_internal_error_is_500_envelope_without_details(client: Any, raw: httpx.Client) -> None:
    from completions.models import ModelRoute
    from completions.providers import register

    register("broken", "tests.fakes.broken.BrokenProvider")
    ModelRoute.objects.create(model_name="broken-model", provider="broken", upstream_model="broken-model")
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="broken-model", messages=MESSAGES)
    assert exc.value.status_code == 500
    assert "secret-internal-detail" not in json.dumps(exc.value.body)
    err = envelope(raw.post("/v1/chat/completions", json={"model": "broken-model", "messages": MESSAGES}), 500)
    assert err["type"] == "server_error"
    # A failure after the stream started ends it with an error event, then [DONE].
    with raw.stream(
        "POST", "/v1/chat/completions", json={"model": "broken-model", "messages": MESSAGES, "stream": True}
    ) as r:
        assert r.status_code == 200
        events = [e.removeprefix("data: ") for e in r.read().decode().split("\n\n") if e]
    assert events[-1] == "[DONE]"
    error_event = json.loads(events[-2])
    assert_valid(error_event, "ErrorResponse")
    assert "secret-internal-detail" not in events[-2]
    rows = log_rows(model="broken-model")
    assert [r.status_code for r in rows] == [500, 500, 500]
    assert rows[-1].stream and rows[-1].error_type == "server_error"
