"""OpenAI-compatible, upstream failures -> gateway errors: the provider's one mapping, directly and
against the fake server (no gateway)."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.client_reqrep import ConnectionKey

from completions.errors import GatewayError, UpstreamAuthFailed, UpstreamError
from completions.providers.openai_compat import (
    OpenAICompatProvider,
    StreamTranslator,
    error_from_event,
    error_from_response,
    upstream_error,
)
from tests.conftest import free_port
from tests.fakes.base import DROP, Reply
from tests.fakes.openai_server import FakeOpenAI, chunk, error, text_events
from tests.openapi import assert_valid
from tests.providers.openai_compat.helpers import KEY_ENV, chat_request, drain, route_for, run, sse


@pytest.mark.parametrize(
    ("raw", "status", "etype", "code", "message"),
    [
        (sse(error("Upstream overloaded", type="server_error")), 502, "server_error", None, "Upstream overloaded"),
        (
            sse({"error": {"message": "ctx", "type": "BadRequestError", "code": 400}}),
            400,
            "BadRequestError",
            None,
            "ctx",
        ),
        (
            sse({"object": "error", "message": "vllm flat", "type": "BadRequestError", "param": None, "code": 400}),
            400,
            "BadRequestError",
            None,
            "vllm flat",
        ),
        (
            b'error: {"code": 400, "message": "too long", "type": "invalid_request_error"}\n\n',
            400,
            "invalid_request_error",
            None,
            "too long",
        ),
        (b'event: error\ndata: {"message": "boom"}\n\n', 502, "upstream_error", None, "boom"),
        (sse({"error": "plain string"}), 502, "upstream_error", None, "plain string"),
        (
            sse(error("slow down", type="requests", code="rate_limit_exceeded")),
            502,
            "requests",
            "rate_limit_exceeded",
            "slow down",
        ),
    ],
)
def test_reader_raises_error_events(raw: bytes, status: int, etype: str, code: str | None, message: str) -> None:
    with pytest.raises(GatewayError) as exc:
        StreamTranslator().feed(raw)
    err = exc.value
    assert (err.status, err.type, err.code, err.message) == (status, etype, code, message)
    assert_valid(err.body(), "ErrorResponse")


def test_reader_relays_chunks_read_together_with_a_later_error_first() -> None:
    reader = StreamTranslator()
    got = reader.feed(sse(chunk({"content": "a"}), error("late", type="server_error"), chunk({"content": "never"})))
    assert got == [chunk({"content": "a"})] and reader.done
    with pytest.raises(GatewayError) as exc:
        reader.finish()
    assert exc.value.message == "late"


def test_reader_rejects_malformed_json() -> None:
    with pytest.raises(UpstreamError) as exc:
        StreamTranslator().feed(b"data: {not json\n\n")
    assert "malformed stream event" in exc.value.message


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422, 429, 500, 503])
def test_openai_form_errors_pass_through_with_their_status(status: int) -> None:
    body = orjson.dumps(
        error("The model `x` is bad.", type="invalid_request_error", param="model", code="model_not_found")
    )
    err = error_from_response(status, body, retry_after="3")
    assert (err.status, err.message, err.type, err.param, err.code) == (
        status,
        "The model `x` is bad.",
        "invalid_request_error",
        "model",
        "model_not_found",
    )
    # The upstream's Retry-After is kept where waiting helps (429, 5xx) and dropped elsewhere.
    assert err.headers == ({"retry-after": "3"} if status in (429, 500, 503) else {})


def test_openai_form_error_without_type_gets_one_and_int_codes_are_dropped() -> None:
    err = error_from_response(400, orjson.dumps({"error": {"message": "bad", "code": 400}}))
    assert (err.type, err.code, err.status) == ("invalid_request_error", None, 400)
    assert_valid(err.body(), "ErrorResponse")


def test_upstream_401_never_relays_its_body() -> None:
    body = orjson.dumps(error("Incorrect API key provided: sk-upst*****test.", code="invalid_api_key"))
    err = error_from_response(401, body)
    assert isinstance(err, UpstreamAuthFailed) and err.status == 401
    assert "sk-" not in err.message and "Incorrect API key" not in err.message


@pytest.mark.parametrize(
    ("status", "body", "cls_status", "needle"),
    [
        (
            502,
            b"<html><head><title>502 Bad Gateway</title></head><body><h1>nginx</h1></body></html>",
            502,
            "502 Bad Gateway",
        ),
        (503, b"upstream connect error or disconnect/reset before headers", 503, "upstream connect error"),
        (422, b'{"detail": [{"loc": ["body"], "msg": "field required"}]}', 400, "field required"),
        (404, b'{"error": "model \\"llama3\\" not found, try pulling it first"}', 404, "try pulling it first"),
        (500, b"", 502, "Internal Server Error"),
    ],
)
def test_other_error_bodies_are_wrapped(status: int, body: bytes, cls_status: int, needle: str) -> None:
    err = error_from_response(status, body, reason="Internal Server Error")
    assert err.status == cls_status
    assert needle in err.message and "openai upstream" in err.message
    assert "<html" not in err.message and "<title" not in err.message


def test_error_messages_never_quote_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    body = orjson.dumps(error("Key sk-live-abcdef123456 has no access to model", code="denied"))
    err = error_from_response(403, body)
    assert "abcdef123456" not in err.message and "[redacted]" in err.message
    monkeypatch.setenv("OPENAI_API_KEY", "quota-credential-x")  # not key-shaped: redacted as a known value
    event = error_from_event({"error": {"message": "quota for quota-credential-x"}})
    assert "quota-credential-x" not in event.message


_KEY = ConnectionKey("upstream.example", 443, True, True, None, None, None, None)


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (
            aiohttp.ClientConnectorError(_KEY, ConnectionRefusedError(111, "Connection refused")),
            502,
            "upstream_unreachable",
        ),
        (aiohttp.ClientConnectorDNSError(_KEY, OSError(-2, "Name or service not known")), 502, "upstream_unreachable"),
        (aiohttp.ConnectionTimeoutError("timed out"), 502, "upstream_unreachable"),
        (aiohttp.SocketTimeoutError("timed out"), 504, "upstream_timeout"),
        (aiohttp.ServerTimeoutError("timed out"), 504, "upstream_timeout"),
        (aiohttp.ServerDisconnectedError(), 502, "upstream_connection_lost"),
        (aiohttp.ClientPayloadError("Response payload is not completed"), 502, "upstream_connection_lost"),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), 502, "upstream_connection_lost"),
        (aiohttp.ClientConnectionResetError("Cannot write to closing transport"), 502, "upstream_connection_lost"),
        (aiohttp.InvalidURL("no-scheme/v1/chat/completions"), 502, "upstream_error"),
        (aiohttp.NonHttpUrlClientError("ftp://upstream/v1/chat/completions"), 502, "upstream_error"),
    ],
)
def test_transport_errors(exc: Exception, status: int, code: str) -> None:
    err = upstream_error(exc)
    assert err is not None and (err.status, err.code) == (status, code)
    assert err.retryable


def test_the_gateways_own_deadline_is_not_a_transport_error() -> None:
    # aiohttp's timeouts are TimeoutErrors too; a bare one is the gateway's deadline, mapped by its owner.
    assert upstream_error(TimeoutError()) is None
    assert upstream_error(ConnectionRefusedError(111, "refused")) is None  # not aiohttp's: not an upstream failure


def test_missing_credential_is_503_before_any_request(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(GatewayError) as exc:
        run(lambda p: p.complete(p.prepare(chat_request())), route_for(fake))
    assert (exc.value.status, exc.value.code) == (503, "upstream_credential_missing")
    assert fake.requests == []


def test_complete_with_an_error_inside_a_200(fake: FakeOpenAI) -> None:
    fake.script(Reply(json=error("context too long", code="context_length_exceeded")))
    with pytest.raises(GatewayError) as exc:
        run(lambda p: p.complete(p.prepare(chat_request())), route_for(fake))
    assert exc.value.code == "context_length_exceeded" and exc.value.message == "context too long"


def test_complete_with_a_non_json_200(fake: FakeOpenAI) -> None:
    fake.script(Reply(body=b"<html>captive portal</html>"))
    with pytest.raises(UpstreamError) as exc:
        run(lambda p: p.complete(p.prepare(chat_request())), route_for(fake))
    assert "not a JSON object" in exc.value.message


def test_stream_error_status_surfaces_from_the_first_anext(fake: FakeOpenAI) -> None:
    fake.script(
        Reply(
            status=429,
            json=error("Rate limit reached", type="requests", code="rate_limit_exceeded"),
            headers={"retry-after": "7"},
        )
    )

    async def first(p: OpenAICompatProvider) -> Any:
        stream = p.stream(p.prepare(chat_request(stream=True)))
        return await anext(stream)

    with pytest.raises(GatewayError) as exc:
        run(first, route_for(fake))
    err = exc.value
    assert (err.status, err.code, err.message, err.headers) == (
        429,
        "rate_limit_exceeded",
        "Rate limit reached",
        {"retry-after": "7"},
    )


def test_stream_mid_stream_error_event_raises(fake: FakeOpenAI) -> None:
    events = [*text_events()[:3], error("The server had an error", type="server_error")]
    fake.script(Reply(events=events))
    got: list[dict[str, Any]] = []

    async def consume(p: OpenAICompatProvider) -> None:
        async for c in p.stream(p.prepare(chat_request(stream=True))):
            got.append(c)

    with pytest.raises(GatewayError) as exc:
        run(consume, route_for(fake))
    assert len(got) == 3 and exc.value.type == "server_error" and exc.value.status == 502


def test_stream_drop_raises_connection_lost(fake: FakeOpenAI) -> None:
    fake.script(Reply(events=[*text_events()[:2], DROP]))
    got: list[dict[str, Any]] = []

    async def consume(p: OpenAICompatProvider) -> None:
        async for c in p.stream(p.prepare(chat_request(stream=True))):
            got.append(c)

    with pytest.raises(UpstreamError) as exc:
        run(consume, route_for(fake))
    assert len(got) == 2 and exc.value.code == "upstream_connection_lost"


def test_connection_refused_is_unreachable() -> None:
    route = route_for(base_url=f"http://127.0.0.1:{free_port()}/v1", api_key_env="")
    with pytest.raises(GatewayError) as exc:
        run(lambda p: drain(p.stream(p.prepare(chat_request(stream=True)))), route)
    assert (exc.value.status, exc.value.code) == (502, "upstream_unreachable")


@pytest.mark.parametrize("base_url", ["no-scheme/v1", "ftp://127.0.0.1/v1", "http://127.0.0.1:port/v1"])
def test_a_base_url_that_is_not_a_usable_http_url_is_an_upstream_error(base_url: str) -> None:
    route = route_for(base_url=base_url, api_key_env="")
    with pytest.raises(GatewayError) as exc:
        run(lambda p: p.complete(p.prepare(chat_request())), route)
    assert (exc.value.status, exc.value.code) == (502, "upstream_error")
