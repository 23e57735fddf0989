"""A lean ASGI handler for the OpenAI-compatible endpoints.

Django's stock `ASGIHandler` wraps every request in asgiref's
`ThreadSensitiveContext` (a thread start and join per request once any sync
code runs), sends `request_started`/`request_finished` (whose DB receivers hop
to a thread twice), runs `MiddlewareMixin` middleware through `sync_to_async`,
and logs 4xx/5xx responses on another thread. The gateway's views are async
and touch the database only off the request path, so this handler skips all
of that: it reads the body (refusing oversized ones early with a 413), builds
the request, runs a chain of plain async middleware and the view, and sends
the answer. The admin and the management API keep the stock handler, whose
behaviour sync views need.

What Django's middleware would guard it guards too, at the cost of a dict
lookup per request: the `Host` header is checked against ALLOWED_HOSTS (as
`request.get_host()` checks it; each distinct value's answer is remembered;
`/healthz`, `/readyz` and `/metrics` excepted, for probes and scrapers),
and every response carries the headers SecurityMiddleware and
XFrameOptionsMiddleware would add, computed once from the settings.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable
from inspect import iscoroutinefunction
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler
from django.http import Http404, HttpRequest, HttpResponseBase
from django.http.request import split_domain_port, validate_host
from django.urls import ResolverMatch, get_resolver
from django.utils.module_loading import import_string

from .circuit import DEPENDENCY_ERRORS
from .errors import (
    GatewayError,
    InternalError,
    InvalidRequest,
    PayloadTooLarge,
    dependency_unavailable,
    error_response,
    not_found,
)
from .middleware import request_id_from

logger = logging.getLogger(__name__)
host_logger = logging.getLogger("django.security.DisallowedHost")

Headers = list[tuple[bytes, bytes]]
# Probes and scrapes answer whatever Host they are asked under: container and orchestrator probes
# and Prometheus use the machine's address, which ALLOWED_HOSTS rarely lists, and the answers
# depend on no host (/metrics has its own access rule, see views.authorize_scrape).
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
GetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]
ErrorRenderer = Callable[[GatewayError], HttpResponseBase]


# Paths of Anthropic's Messages API: errors the handler answers itself (413, a refused Host) come in
# Anthropic's envelope there, as the views' own errors do.
MESSAGES_PATHS = ("/v1/messages", "/messages")


def path_error_renderer(path: str) -> Callable[[GatewayError, str | None], HttpResponseBase]:
    """How the handler renders its own errors for `path`: Anthropic's envelope under the Messages API."""
    if any(path == prefix or path.startswith(prefix + "/") for prefix in MESSAGES_PATHS):
        from .messages.envelope import render

        return render
    return error_response


class BodyTooLarge(Exception):
    """The request body exceeds GATEWAY_MAX_BODY_BYTES."""


def _envelope_errors(get_response: GetResponse) -> GetResponse:
    """Turn a 404 or any escaped exception into an error envelope (never Django's HTML pages).

    The one place failures become responses: OpenAI's envelope, unless the view set another
    dialect's renderer on the request (`request.error_renderer`, e.g. Anthropic's Messages API).
    """

    async def inner(request: HttpRequest) -> HttpResponseBase:
        try:
            return await get_response(request)
        except Http404:
            return not_found(request)
        except GatewayError as exc:
            render: ErrorRenderer = getattr(request, "error_renderer", error_response)
            return render(exc)
        except DEPENDENCY_ERRORS as exc:
            # Every path handles its dependencies' outages itself; this is the net under them.
            logger.warning("%s %s: a dependency failed: %s: %s", request.method, request.path, type(exc).__name__, exc)
            render = getattr(request, "error_renderer", error_response)
            return render(dependency_unavailable("answer this request"))
        except Exception:
            logger.exception("unhandled error for %s %s", request.method, request.path)
            render = getattr(request, "error_renderer", error_response)
            return render(InternalError("The gateway hit an internal error; it has been logged."))

    return inner


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin1")
    return None


def security_headers(secure: bool) -> Headers:
    """The headers Django's SecurityMiddleware and XFrameOptionsMiddleware add to a response,
    from the current settings (HSTS only on a secure request, as there)."""
    headers: Headers = []
    if secure and settings.SECURE_HSTS_SECONDS:
        sts = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            sts += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            sts += "; preload"
        headers.append((b"Strict-Transport-Security", sts.encode("latin1")))
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append((b"X-Content-Type-Options", b"nosniff"))
    policy = settings.SECURE_REFERRER_POLICY
    if policy:
        values = [v.strip() for v in policy.split(",")] if isinstance(policy, str) else list(policy)
        headers.append((b"Referrer-Policy", ",".join(values).encode("latin1")))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append((b"Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY.encode("latin1")))
    headers.append((b"X-Frame-Options", getattr(settings, "X_FRAME_OPTIONS", "DENY").upper().encode("latin1")))
    return headers


class AllowedHosts:
    """ALLOWED_HOSTS applied as `HttpRequest.get_host()` applies it, each distinct Host's answer remembered."""

    MAX_REMEMBERED = 1024  # a flood of made-up hosts only empties the memo, never grows it

    def __init__(self) -> None:
        allowed = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not allowed:
            allowed = [".localhost", "127.0.0.1", "[::1]"]
        self.allowed = allowed
        self.forwarded = settings.USE_X_FORWARDED_HOST
        self.seen: dict[str, bool] = {}

    def raw_host(self, request: HttpRequest) -> str:
        host = None if self.forwarded else request.META.get("HTTP_HOST")
        return host if host is not None else request._get_raw_host()

    def __call__(self, host: str) -> bool:
        ok = self.seen.get(host)
        if ok is None:
            domain, _ = split_domain_port(host)
            ok = bool(domain) and validate_host(domain, self.allowed)
            if not ok:
                host_logger.warning("Invalid HTTP_HOST header: %r. It is not in ALLOWED_HOSTS.", host[:200])
            if len(self.seen) >= self.MAX_REMEMBERED:
                self.seen.clear()
            self.seen[host] = ok
        return ok


class GatewayASGIHandler(ASGIHandler):
    """ASGI handler for the gateway endpoints: no per-request thread context, signals or sync middleware."""

    def load_middleware(self, is_async: bool = True) -> None:
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []
        handler: GetResponse = _envelope_errors(self._get_response_async)
        for path in reversed(settings.GATEWAY_MIDDLEWARE):
            handler = _envelope_errors(import_string(path)(handler))
        self._middleware_chain = handler
        # Computed once: per request the handler only picks one of the two lists.
        self._headers = security_headers(secure=False)
        self._secure_headers = security_headers(secure=True)
        self._hsts = self._secure_headers != self._headers
        self._allowed_host = AllowedHosts()
        self._matches: dict[str, ResolverMatch] = {}
        self._atomic = any(db.get("ATOMIC_REQUESTS") for db in settings.DATABASES.values())

    MAX_REMEMBERED_PATHS = 1024

    def resolve_request(self, request: HttpRequest) -> ResolverMatch:
        """Django's resolve_request, remembering each path's match: resolving walks the URL patterns
        (about a tenth of a worker's time at 64 connections), and the gateway serves a handful of paths."""
        if hasattr(request, "urlconf"):
            return super().resolve_request(request)
        path = request.path_info
        match = self._matches.get(path)
        if match is None:
            match = get_resolver().resolve(path)  # Resolver404 is an Http404: the error boundary's 404
            if len(self._matches) >= self.MAX_REMEMBERED_PATHS:
                self._matches.clear()
            self._matches[path] = match
        request.resolver_match = match
        return match

    async def _get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        """Resolve and call the view. The gateway's views are async and this handler has no view,
        exception or template-response middleware, so that is all Django's version does here."""
        callback, args, kwargs = self.resolve_request(request)
        if self._atomic or not iscoroutinefunction(callback):
            response: HttpResponseBase = await super()._get_response_async(request)
            return response
        response = await callback(request, *args, **kwargs)
        self.check_response(response, callback)
        if callable(getattr(response, "render", None)):
            response = await sync_to_async(response.render, thread_sensitive=True)()
        return response

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"The gateway handler serves HTTP only, not {scope['type']}.")
        await self.handle(scope, receive, send)

    async def read_body(self, receive: Any, limit: int | None = None) -> io.BytesIO:
        """The whole body, or BodyTooLarge as soon as it passes the limit."""
        limit = settings.GATEWAY_MAX_BODY_BYTES if limit is None else limit
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestAborted()
            body = message.get("body", b"")
            if body:
                size += len(body)
                if size > limit:
                    raise BodyTooLarge()
                parts.append(body)
            if not message.get("more_body", False):
                break
        return io.BytesIO(b"".join(parts))

    async def send_response(self, response: HttpResponseBase, send: Any, extra: Headers | None = None) -> None:
        """Django's send_response, with the security headers (`extra`, default: a plain request's)."""
        extra = self._headers if extra is None else extra
        if response.streaming:  # not one of the gateway's own streams: Django sends it, with the headers

            async def send_with_headers(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message["headers"], *extra]
                await send(message)

            await super().send_response(response, send_with_headers)
            return
        headers = [(name.encode("ascii"), value.encode("latin1")) for name, value in response.items()]
        headers.extend(extra)
        for cookie in response.cookies.values():
            headers.append((b"Set-Cookie", cookie.output(header="").encode("ascii").strip()))
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        for chunk, last in self.chunk_bytes(response.content):
            await send({"type": "http.response.body", "body": chunk, "more_body": not last})

    async def send_stream(self, response: HttpResponseBase, stream: Any, send: Any, extra: Headers) -> None:
        """Send an SSE stream one event per message, straight from the gateway's iterator
        (Django's StreamingHttpResponse would wrap it in two more async generators)."""
        headers = [(name.encode("ascii"), value.encode("latin1")) for name, value in response.items()]
        headers.extend(extra)
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        async for part in stream:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body"})

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        limit = settings.GATEWAY_MAX_BODY_BYTES
        declared = _header(scope, b"content-length")
        try:
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise BodyTooLarge()
            body_file = await self.read_body(receive, limit)
        except RequestAborted:
            return
        except BodyTooLarge:
            err = PayloadTooLarge(f"The request body is larger than the {limit} bytes this gateway accepts.")
            render = path_error_renderer(scope["path"])
            await self.send_response(render(err, request_id_from(_header(scope, b"x-request-id"))), send)
            return
        # No set_script_prefix/set_urlconf: the gateway's views reverse no URLs and resolve
        # against ROOT_URLCONF, the resolver's default (each is a context-variable write).
        request, bad = self.create_request(scope, body_file)
        if request is None:
            await self.send_response(bad, send)
            return
        if not self._allowed_host(self._allowed_host.raw_host(request)) and scope["path"] not in PROBE_PATHS:
            refused = InvalidRequest("Invalid Host header: this gateway does not serve that host.", code="invalid_host")
            rid = request_id_from(request.META.get("HTTP_X_REQUEST_ID"))
            await self.send_response(path_error_renderer(scope["path"])(refused, rid), send)
            return
        extra = self._secure_headers if self._hsts and request.is_secure() else self._headers

        # As Django does, listen for a disconnect while serving, so that a client going away
        # cancels the view (and with it the upstream call); but serve in this task, not a new
        # one, and cancel it only if the listener saw the disconnect.
        task = asyncio.current_task()
        assert task is not None
        gone = serving = False

        async def listen() -> None:
            nonlocal gone
            try:
                await self.listen_for_disconnect(receive)
            except RequestAborted:
                if serving:  # only while the view or the send is awaited, never during cleanup
                    gone = True
                    task.cancel()

        listener = asyncio.create_task(listen())
        response: HttpResponseBase | None = None
        serving = True
        try:
            response = await self._middleware_chain(request)
            stream = getattr(response, "gateway_stream", None)
            if stream is not None:
                await self.send_stream(response, stream, send, extra)
            else:
                await self.send_response(response, send, extra)
        except asyncio.CancelledError:
            if not gone:
                raise  # not ours: the server is shutting down
            task.uncancel()
        finally:
            serving = False
            listener.cancel()
            stream = getattr(response, "gateway_stream", None)
            if stream is not None:
                await stream.aclose()  # no-op when it ran to the end
            body_file.close()
