"""One exception hierarchy for every failure, and its mapping to OpenAI's error envelope.

Every error a client can see (validation, auth, limits, routing, upstream
failures) is a `GatewayError`; `error_body()` turns it into
`{"error": {"message", "type", "param", "code"}}` with the status OpenAI uses.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse

from .redaction import redact


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
        # Seconds the upstream itself asked to wait (its retry-after); None for the gateway's own
        # errors, so a retry-after the gateway adds for clients never slows its own retries.
        self.upstream_retry_after: float | None = None
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


E = TypeVar("E", bound=GatewayError)


def _quoting_upstream(cls: type[E], message: str, quoted: str | None = None, **kwargs: Any) -> E:
    """The one constructor of errors whose message may quote an upstream (an error body, a transport
    message): the text is redacted here, so no credential reaches a client, a log line or the database.
    `quoted` is the upstream's own part of the message, which the log keeps only with content logging."""
    return cls(redact(message), quoted=redact(quoted) if quoted else None, **kwargs)


def from_upstream_status(
    status: int, message: str, *, provider: str, retry_after: str | None = None, code: str | None = None
) -> GatewayError:
    """The OpenAI-side error for an upstream HTTP status; every provider maps through here.

    The message may quote the upstream's own explanation, never a credential (see `_quoting_upstream`).
    `retry_after` is the upstream's own header: kept as the error's `upstream_retry_after`.
    """
    err = _by_status(status, message, provider=provider, retry_after=retry_after, code=code)
    err.upstream_retry_after = seconds(retry_after)
    return err


def seconds(value: str | None) -> float | None:
    """A retry-after header's seconds (None when absent or not a number of seconds)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _by_status(status: int, message: str, *, provider: str, retry_after: str | None, code: str | None) -> GatewayError:
    headers = {"retry-after": retry_after} if retry_after else {}
    retry = headers or {"retry-after": "1"}
    where = f"{provider} upstream"
    if status == 400 or status == 422:
        return _quoting_upstream(
            InvalidRequest,
            f"The {where} rejected the request: {message}",
            quoted=message,
            code=code or "upstream_invalid_request",
        )
    if status == 401:
        return _quoting_upstream(
            UpstreamAuthFailed,
            f"The {where} rejected the gateway's credential for this model; "
            "the gateway operator must fix the provider API key.",
        )
    if status == 403:
        return _quoting_upstream(
            PermissionDenied,
            f"The {where} refused access: {message}",
            quoted=message,
            code=code or "upstream_permission_denied",
        )
    if status == 404:
        return _quoting_upstream(
            NotFound,
            f"The {where} does not know this model or resource: {message}",
            quoted=message,
            code=code or "model_not_found",
        )
    if status == 408 or status == 504:
        return _quoting_upstream(UpstreamTimeout, f"The {where} timed out: {message}", quoted=message, headers=retry)
    if status == 413:
        return _quoting_upstream(
            PayloadTooLarge, f"The {where} says the request is too large: {message}", quoted=message
        )
    if status == 429:
        return _quoting_upstream(
            RateLimited,
            f"The {where} is rate limiting or out of quota: {message}",
            quoted=message,
            type="upstream_rate_limit",
            code=code or "rate_limit_exceeded",
            headers=retry,
        )
    if status == 529 or status == 503:
        return _quoting_upstream(
            ServiceUnavailable,
            f"The {where} is overloaded or unavailable; retry shortly. ({message})",
            quoted=message,
            code=code or "upstream_overloaded",
            headers=retry,
        )
    if status >= 500:
        return _quoting_upstream(
            UpstreamError, f"The {where} failed ({status}): {message}", quoted=message, headers=retry
        )
    return _quoting_upstream(
        UpstreamError, f"The {where} answered an unexpected status {status}: {message}", quoted=message
    )


def relayed_upstream_error(
    status: int,
    message: str,
    *,
    provider: str,
    type: str | None = None,
    param: str | None = None,
    code: str | None = None,
    retry_after: str | None = None,
) -> GatewayError:
    """An upstream's own OpenAI-form error, relayed with its status, message, type, param and code.

    Headers (retry-after) come from `from_upstream_status`; a 401 is never relayed (its body can
    quote a masked key): it is the gateway's credential error.
    """
    mapped = from_upstream_status(status, "", provider=provider, retry_after=retry_after)
    if status == 401:
        return mapped
    relayed = _quoting_upstream(
        GatewayError,
        message,
        quoted=message,
        type=type or mapped.type,
        param=param,
        code=code,
        status=status,
        headers=mapped.headers,
    )
    relayed.upstream_retry_after = mapped.upstream_retry_after
    return relayed


def upstream_failure(message: str, *, code: str | None = None, headers: dict[str, str] | None = None) -> UpstreamError:
    """A 502 for an upstream that answered something unusable or broke off; `message` may quote it."""
    return _quoting_upstream(UpstreamError, message, code=code, headers=headers)


def upstream_unreachable(provider: str, detail: str) -> UpstreamError:
    """The provider could not be reached (connection refused, reset, DNS)."""
    return _quoting_upstream(
        UpstreamError,
        f"The {provider} upstream could not be reached: {detail}",
        code="upstream_unreachable",
        headers={"retry-after": "1"},
    )


def upstream_timeout(provider: str, what: str) -> UpstreamTimeout:
    return _quoting_upstream(
        UpstreamTimeout, f"The {provider} upstream timed out ({what}).", headers={"retry-after": "1"}
    )


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
