"""DRF errors in OpenAI's envelope, so the whole service speaks one error format."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

TYPES = {
    status.HTTP_400_BAD_REQUEST: "invalid_request_error",
    status.HTTP_401_UNAUTHORIZED: "invalid_request_error",
    status.HTTP_403_FORBIDDEN: "invalid_request_error",
    status.HTTP_404_NOT_FOUND: "invalid_request_error",
    status.HTTP_405_METHOD_NOT_ALLOWED: "invalid_request_error",
    status.HTTP_429_TOO_MANY_REQUESTS: "requests",
}


def _first_message(detail: Any) -> tuple[str, str | None]:
    """The first message in a DRF error detail, with the field it concerns."""
    if isinstance(detail, dict):
        for field, value in detail.items():
            message, inner = _first_message(value)
            return message, field if inner is None or field == "non_field_errors" else f"{field}.{inner}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail), None


def envelope_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = exception_handler(exc, context)
    if response is None:
        return None
    message, param = _first_message(response.data)
    code = getattr(exc, "default_code", None) if isinstance(exc, exceptions.APIException) else None
    if isinstance(exc, exceptions.ValidationError):
        code = "invalid_value"
    response.data = {
        "error": {
            "message": message,
            "type": TYPES.get(
                response.status_code, "server_error" if response.status_code >= 500 else "invalid_request_error"
            ),
            "param": param if param != "detail" else None,
            "code": code,
        }
    }
    return response
