"""Gemini, upstream failures -> gateway errors: the provider's one mapping, no network."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from google.genai import errors as genai_errors

from completions.errors import GatewayError
from completions.providers.base import upstream_failures
from completions.providers.gemini import from_api_error, upstream_error
from completions.redaction import MARKER
from tests.fakes.gemini import error


def api_error(code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> genai_errors.APIError:
    return genai_errors.APIError(code, body, httpx.Response(code, headers=headers or {}))


@pytest.mark.parametrize(
    "code, body, status, error_code",
    [
        (400, error(400, "INVALID_ARGUMENT", "bad field"), 400, "upstream_invalid_request"),
        (
            400,
            {
                "error": {
                    "code": 400,
                    "message": "API key not valid.",
                    "status": "INVALID_ARGUMENT",
                    "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
                }
            },
            401,
            "upstream_invalid_credential",
        ),
        (401, error(401, "UNAUTHENTICATED", "no"), 401, "upstream_invalid_credential"),
        (403, error(403, "PERMISSION_DENIED", "denied"), 403, "upstream_permission_denied"),
        (404, error(404, "NOT_FOUND", "models/x is not found"), 404, "model_not_found"),
        (429, error(429, "RESOURCE_EXHAUSTED", "quota"), 429, "rate_limit_exceeded"),
        (500, error(500, "INTERNAL", "oops"), 502, "upstream_error"),
        (503, error(503, "UNAVAILABLE", "overloaded"), 503, "upstream_overloaded"),
    ],
)
def test_api_errors_map_by_status(
    code: int, body: dict[str, Any], status: int, error_code: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "sekrit-key")
    err = from_api_error(api_error(code, body))
    assert (err.status, err.code) == (status, error_code)
    assert "sekrit-key" not in err.message


def test_retry_after_from_header_or_retry_info() -> None:
    info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "16.2s"}
    assert from_api_error(api_error(429, error(429, "RESOURCE_EXHAUSTED", "q", info))).headers["retry-after"] == "17"
    assert (
        from_api_error(api_error(429, error(429, "RESOURCE_EXHAUSTED", "q"), {"retry-after": "3"})).headers[
            "retry-after"
        ]
        == "3"
    )


def test_credential_is_masked_in_upstream_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "sekrit-key")
    err = from_api_error(api_error(400, error(400, "INVALID_ARGUMENT", "key sekrit-key is odd")))
    assert "sekrit-key" not in err.message and MARKER in err.message


@pytest.mark.parametrize(
    "exc, status, code",
    [
        (httpx.ReadTimeout("slow"), 504, "upstream_timeout"),
        (httpx.ConnectTimeout("slow"), 504, "upstream_timeout"),
        (httpx.ConnectError("refused"), 502, "upstream_unreachable"),
        (httpx.RemoteProtocolError("cut"), 502, "upstream_error"),
        (genai_errors.UnknownApiResponseError("junk"), 502, "upstream_error"),
    ],
)
def test_transport_failures_map_to_gateway_errors(exc: Exception, status: int, code: str) -> None:
    with pytest.raises(GatewayError) as caught, upstream_failures(upstream_error):
        raise exc
    assert (caught.value.status, caught.value.code) == (status, code)
