"""One exception hierarchy for every failure, and its mapping to OpenAI's error envelope.

Every error a client can see (validation, auth, limits, routing, upstream
failures) is a `GatewayError`; `error_body()` turns it into
`{"error": {"message", "type", "param", "code"}}` with the status OpenAI uses.
"""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse


class GatewayError(Exception):
    """Base of every client-visible failure."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
        quoted: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        # The upstream's own words inside `message` (they may quote the client's prompt): kept out of
        # the log unless content logging is on.
        self.quoted = quoted or None
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The OpenAI error envelope for this error."""
        return error_body(self.message, self.type, self.param, self.code)

    @property
    def retryable(self) -> bool:
        """Whether another attempt (or another route) may succeed."""
        return self.status in (408, 429) or self.status >= 500

    def loggable_message(self) -> str:
        """The message as the request log may keep it: without the upstream's words unless content is logged."""
        if self.quoted is None or settings.GATEWAY_LOG_CONTENT:
            return self.message
        return self.message.replace(self.quoted, "[upstream message not logged]")


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "invalid_request_error"
    code = "permission_denied"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str, **kwargs: Any) -> None:
        super().__init__(
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
            **kwargs,
        )


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class QuotaExceeded(GatewayError):
    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"

    @property
    def retryable(self) -> bool:
        return False


class InternalError(GatewayError):
    status = 500
    type = "server_error"
    code = "internal_error"


class UpstreamError(GatewayError):
    """The provider answered with an error or could not be reached."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout"
    code = "upstream_timeout"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "service_unavailable"


def dependency_unavailable(what: str, retry_after: str = "1") -> ServiceUnavailable:
    """The 503 for a request the gateway can't serve while one of its own dependencies is down
    (never a 500: the client may retry, and the SDKs do)."""
    return ServiceUnavailable(
        f"The gateway can't {what} right now: a service it depends on is unreachable. Retry shortly.",
        headers={"retry-after": retry_after},
    )


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(err: GatewayError, request_id: str | None = None) -> HttpResponse:
    """A JSON response carrying `err` in OpenAI's envelope, with its status and headers."""
    body = orjson.dumps(err.body())
    response = HttpResponse(body, status=err.status, content_type="application/json")
    response["Content-Length"] = str(len(body))
    for name, value in err.headers.items():
        response[name] = value
    if request_id:
        response["x-request-id"] = request_id
    return response


class UpstreamAuthFailed(GatewayError):
    """The provider refused the gateway's own credential (not the caller's key)."""

    status = 401
    type = "upstream_authentication_error"
    code = "upstream_invalid_credential"


def from_upstream_status(
    status: int, message: str, *, provider: str, retry_after: str | None = None, code: str | None = None
) -> GatewayError:
    """The OpenAI-side error for an upstream HTTP status; every provider maps through here.

    The message may quote the upstream's own explanation, but never a credential.
    """
    headers = {"retry-after": retry_after} if retry_after else {}
    where = f"{provider} upstream"
    if status == 400 or status == 422:
        return InvalidRequest(
            f"The {where} rejected the request: {message}", code=code or "upstream_invalid_request", quoted=message
        )
    if status == 401:
        return UpstreamAuthFailed(
            f"The {where} rejected the gateway's credential for this model; "
            "the gateway operator must fix the provider API key."
        )
    if status == 403:
        return PermissionDenied(
            f"The {where} refused access: {message}", code=code or "upstream_permission_denied", quoted=message
        )
    if status == 404:
        return NotFound(
            f"The {where} does not know this model or resource: {message}",
            code=code or "model_not_found",
            quoted=message,
        )
    if status == 408:
        return UpstreamTimeout(
            f"The {where} timed out: {message}", headers=headers or {"retry-after": "1"}, quoted=message
        )
    if status == 413:
        return PayloadTooLarge(f"The {where} says the request is too large: {message}", quoted=message)
    if status == 429:
        return RateLimited(
            f"The {where} is rate limiting or out of quota: {message}",
            type="upstream_rate_limit",
            code=code or "rate_limit_exceeded",
            headers=headers or {"retry-after": "1"},
            quoted=message,
        )
    if status == 529 or status == 503:
        return ServiceUnavailable(
            f"The {where} is overloaded or unavailable; retry shortly. ({message})",
            code=code or "upstream_overloaded",
            headers=headers or {"retry-after": "1"},
            quoted=message,
        )
    if status == 504:
        return UpstreamTimeout(
            f"The {where} timed out: {message}", headers=headers or {"retry-after": "1"}, quoted=message
        )
    if status >= 500:
        return UpstreamError(
            f"The {where} failed ({status}): {message}", headers=headers or {"retry-after": "1"}, quoted=message
        )
    return UpstreamError(f"The {where} answered an unexpected status {status}: {message}", quoted=message)


def upstream_unreachable(provider: str, detail: str) -> UpstreamError:
    """The provider could not be reached (connection refused, reset, DNS)."""
    return UpstreamError(
        f"The {provider} upstream could not be reached: {detail}",
        code="upstream_unreachable",
        headers={"retry-after": "1"},
    )


def upstream_timeout(provider: str, what: str) -> UpstreamTimeout:
    return UpstreamTimeout(f"The {provider} upstream timed out ({what}).", headers={"retry-after": "1"})


# Django's error handlers (compat_api/urls.py) and the gateway handler's 404: OpenAI's envelope everywhere.


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Unknown URL: OpenAI's 404 envelope."""
    rid = getattr(request, "request_id", None)
    return error_response(NotFound(f"Invalid URL ({request.method} {request.path}).", code=None), rid)


def server_error(request: HttpRequest) -> HttpResponse:
    return error_response(InternalError("The gateway hit an internal error; it has been logged."))


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return error_response(InvalidRequest("Bad request."))


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return error_response(PermissionDenied("You are not allowed to do this."))
