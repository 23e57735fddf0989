"""Anthropic's error envelope: `{"type": "error", "error": {"type", "message"}}` with Anthropic's statuses.

The gateway's one error boundary (`handler.py`) renders a `GatewayError` escaping a Messages view
with `render()`, so the `anthropic` SDKs raise the exception class that matches (BadRequestError,
AuthenticationError, PermissionDeniedError, NotFoundError, RateLimitError, InternalServerError,
OverloadedError, …). Anthropic's envelope has no `param`: the message names the field instead.
"""

from __future__ import annotations

from typing import Any

import orjson
from django.http import HttpResponse

from ..errors import GatewayError

# Gateway status -> (Anthropic status, error type). 503 (every route unavailable, an upstream
# overloaded) is Anthropic's 529 `overloaded_error`; other statuses keep their number.
STATUS_TYPES: dict[int, tuple[int, str]] = {
    400: (400, "invalid_request_error"),
    401: (401, "authentication_error"),
    402: (402, "billing_error"),
    403: (403, "permission_error"),
    404: (404, "not_found_error"),
    405: (405, "invalid_request_error"),
    408: (408, "timeout_error"),
    409: (409, "invalid_request_error"),
    413: (413, "request_too_large"),
    422: (400, "invalid_request_error"),
    429: (429, "rate_limit_error"),
    500: (500, "api_error"),
    502: (502, "api_error"),
    503: (529, "overloaded_error"),
    504: (504, "timeout_error"),
    529: (529, "overloaded_error"),
}


def status_and_type(status: int) -> tuple[int, str]:
    """Anthropic's status and error type for a gateway error's status."""
    known = STATUS_TYPES.get(status)
    if known is not None:
        return known
    if status >= 500:
        return status, "api_error"
    return status, "invalid_request_error"


def message_of(err: GatewayError) -> str:
    """The error's message, naming its field when the message does not already name it."""
    if err.param and err.param not in err.message:
        return f"{err.param}: {err.message}"
    return err.message


def error_body(err: GatewayError, request_id: str | None = None) -> dict[str, Any]:
    """The envelope for `err` (also the data of a mid-stream `error` event)."""
    _, kind = status_and_type(err.status)
    body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message_of(err)}}
    if request_id:
        body["request_id"] = request_id
    return body


def render(err: GatewayError, request_id: str | None = None) -> HttpResponse:
    """A JSON response carrying `err` in Anthropic's envelope, with Anthropic's status and the error's headers."""
    status, _ = status_and_type(err.status)
    body = orjson.dumps(error_body(err, request_id))
    response = HttpResponse(body, status=status, content_type="application/json")
    response["Content-Length"] = str(len(body))
    for name, value in err.headers.items():
        response[name] = value
    if request_id:
        response["x-request-id"] = request_id
        response["request-id"] = request_id
    return response
