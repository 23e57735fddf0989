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
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler
from django.http import Http404, HttpRequest, HttpResponseBase
from django.utils.module_loading import import_string

from .circuit import DEPENDENCY_ERRORS
from .errors import GatewayError, InternalError, PayloadTooLarge, dependency_unavailable, error_response, not_found
from .middleware import request_id_from

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
        except DEPENDENCY_ERRORS as exc:
            # Every path handles its dependencies' outages itself; this is the net under them.
            logger.warning("%s %s: a dependency failed: %s: %s", request.method, request.path, type(exc).__name__, exc)
            return error_response(dependency_unavailable("answer this request"))
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
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []
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

    async def send_stream(self, response: HttpResponseBase, stream: Any, send: Any) -> None:
        """Send an SSE stream one event per message, straight from the gateway's iterator
        (Django's StreamingHttpResponse would wrap it in two more async generators)."""
        headers = [(name.encode("ascii"), value.encode("latin1")) for name, value in response.items()]
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
            await self.send_response(error_response(err, request_id_from(_header(scope, b"x-request-id"))), send)
            return
        # No set_script_prefix/set_urlconf: the gateway's views reverse no URLs and resolve
        # against ROOT_URLCONF, the resolver's default (each is a context-variable write).
        request, bad = self.create_request(scope, body_file)
        if request is None:
            await self.send_response(bad, send)
            return

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
                await self.send_stream(response, stream, send)
            else:
                await self.send_response(response, send)
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
