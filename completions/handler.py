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
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any, Awaitable, Callable

from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.http import Http404, HttpRequest, HttpResponseBase
from django.urls import set_script_prefix, set_urlconf
from django.utils.module_loading import import_string

from .errors import GatewayError, InternalError, PayloadTooLarge, error_response
from .middleware import request_id_from
from .views import not_found

logger = logging.getLogger(__name__)

GetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


class BodyTooLarge(Exception):
    """The request body exceeds GATEWAY_MAX_BODY_BYTES."""


def _envelope_errors(get_response: GetResponse) -> GetResponse:
    """Turn a 404 or any escaped exception into OpenAI's envelope (never Django's HTML pages)."""

    async def inner(request: HttpRequest) -> HttpResponseBase:
        try:
            return await get_response(request)
        except Http404:
            return not_found(request)
        except GatewayError as exc:
            return error_response(exc)
        except Exception:
            logger.exception("unhandled error for %s %s", request.method, request.path)
            return error_response(InternalError("The gateway hit an internal error; it has been logged."))

    return inner


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin1")
    return None


class GatewayASGIHandler(ASGIHandler):
    """ASGI handler for the gateway endpoints: no per-request thread context, signals or sync middleware."""

    def load_middleware(self, is_async: bool = True) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        handler: GetResponse = _envelope_errors(self._get_response_async)
        for path in reversed(settings.GATEWAY_MIDDLEWARE):
            handler = _envelope_errors(import_string(path)(handler))
        self._middleware_chain = handler

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
            await self.send_response(error_response(err, request_id_from(_header(scope, b"x-request-id"))), send)
            return
        set_script_prefix(get_script_prefix(scope))
        set_urlconf(settings.ROOT_URLCONF)
        request, bad = self.create_request(scope, body_file)
        if request is None:
            await self.send_response(bad, send)
            return

        response: HttpResponseBase | None = None

        async def process() -> None:
            nonlocal response
            response = await self._middleware_chain(request)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client went away while we were sending

        # As Django does: serve the request while listening for a disconnect, so a
        # client that goes away cancels the view (and with it the upstream call).
        listener = asyncio.create_task(self.listen_for_disconnect(receive))
        worker = asyncio.create_task(process())
        try:
            await asyncio.wait((listener, worker), return_when=asyncio.FIRST_COMPLETED)
            for task in (listener, worker):
                if not task.done():
                    task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, RequestAborted):
                    pass
        finally:
            stream = getattr(response, "gateway_stream", None)
            if stream is not None:
                await stream.aclose()  # no-op when it ran to the end
            body_file.close()
