"""HTTP glue for the OpenAI-compatible endpoints: each view opens an exchange and calls one service.

Errors are not caught here: the gateway handler's error boundary (`handler.py`)
maps every failure to OpenAI's envelope, in one place.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from . import chat, embeddings, metrics
from .app import current
from .auth import authenticate
from .errors import AuthenticationFailed, MethodNotAllowed, ModelNotFound, NotFound, PermissionDenied
from .exchange import Exchange, json_response
from .messages import envelope
from .messages import service as messages
from .messages.protocol import CountTokensRequest, MessagesRequest
from .protocol import ChatCompletionRequest, EmbeddingRequest, model_entry

STARTED = int(time.time())  # `created` of the models listed (routes have no age that matters to clients)

View = Callable[..., Awaitable[HttpResponseBase]]


def api_view(*methods: str) -> Callable[[View], View]:
    """Allow only `methods` (405 in OpenAI's envelope otherwise)."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in methods:
                raise MethodNotAllowed(f"Invalid method for URL ({request.method} {request.path}).")
            return await view(request, *args, **kwargs)

        return wrapper

    return decorate


@api_view("POST")
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    """POST /v1/chat/completions."""
    async with Exchange.open(request, "chat.completions") as ex:
        return await chat.create(ex, await ex.accept(request, ChatCompletionRequest))


@api_view("POST")
async def create_embeddings(request: HttpRequest) -> HttpResponseBase:
    """POST /v1/embeddings."""
    async with Exchange.open(request, "embeddings") as ex:
        return await embeddings.create(ex, await ex.accept(request, EmbeddingRequest))


def messages_view(*methods: str) -> Callable[[View], View]:
    """An Anthropic Messages endpoint: every error (405, 401, 400, …) in Anthropic's envelope."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            request_id = getattr(request, "request_id", None)
            request.error_renderer = lambda err: envelope.render(err, request_id)
            if request.method not in methods:
                raise MethodNotAllowed(f"Invalid method for URL ({request.method} {request.path}).")
            return await view(request, *args, **kwargs)

        return wrapper

    return decorate


@messages_view("POST")
async def create_message(request: HttpRequest) -> HttpResponseBase:
    """POST /v1/messages (Anthropic's Messages API; `?beta=true` as Claude Code sends it)."""
    async with Exchange.open(request, messages.ENDPOINT) as ex:
        return await messages.create(ex, await ex.accept(request, MessagesRequest), request)


@messages_view("POST")
async def count_message_tokens(request: HttpRequest) -> HttpResponseBase:
    """POST /v1/messages/count_tokens."""
    async with Exchange.open(request, messages.COUNT_ENDPOINT) as ex:
        return await messages.count_tokens(ex, await ex.accept(request, CountTokensRequest), request)


@messages_view("POST")
async def unknown_messages_path(request: HttpRequest, rest: str) -> HttpResponseBase:
    """Any other path under /v1/messages: Anthropic's 404."""
    raise NotFound(f"Invalid URL ({request.method} {request.path}).")


@api_view("GET")
async def list_models(request: HttpRequest) -> HttpResponseBase:
    """GET /v1/models: the models this key may use."""
    gateway = current()
    caller = await authenticate(request, gateway.keys)
    table = await gateway.router.table()
    names = [name for name in table.model_ids() if caller.allows(name)]
    data = [model_entry(name, table.routes_for(name)[0].provider, STARTED) for name in names]
    return json_response({"object": "list", "data": data})


@api_view("GET")
async def retrieve_model(request: HttpRequest, model: str) -> HttpResponseBase:
    """GET /v1/models/{model}."""
    gateway = current()
    caller = await authenticate(request, gateway.keys)
    routes = (await gateway.router.table()).routes_for(model)
    if not routes or not caller.allows(model):
        raise ModelNotFound(model)
    return json_response(model_entry(model, routes[0].provider, STARTED))


@api_view("GET")
async def healthz(request: HttpRequest) -> HttpResponseBase:
    """GET /healthz: the process serves requests (no I/O); how many log rows wait to be written."""
    log = current().log
    return json_response(
        {
            "status": "ok",
            "log_backlog": log.pending(),
            "log_set_aside": log.set_aside,
            "log_replayed": log.replayed,  # rows written from spool files that stopped processes left
            "log_dropped": log.dropped,  # rows lost: neither the database nor the spool took them
        }
    )


METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def authorize_scrape(request: HttpRequest) -> None:
    """A scrape is allowed from the networks in GATEWAY_METRICS_NETWORKS (the connection's own
    address) or with `Authorization: Bearer <GATEWAY_METRICS_TOKEN>`; else a 401 (a token is set)
    or a 403."""
    token: str = settings.GATEWAY_METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return
    if metrics.address_allowed(request.META.get("REMOTE_ADDR") or "", tuple(settings.GATEWAY_METRICS_NETWORKS)):
        return
    if token:
        raise AuthenticationFailed(
            "Metrics need `Authorization: Bearer <GATEWAY_METRICS_TOKEN>` from this address.",
            code="invalid_metrics_token",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    raise PermissionDenied("Metrics are served only to the networks in GATEWAY_METRICS_NETWORKS.")


@api_view("GET")
async def metrics_view(request: HttpRequest) -> HttpResponseBase:
    """GET /metrics: Prometheus text format, every worker's values added up (see `metrics.py`)."""
    authorize_scrape(request)
    body = await asyncio.to_thread(metrics.render)  # reads each worker's file: off the event loop
    return HttpResponse(body, content_type=METRICS_CONTENT_TYPE)


@api_view("GET")
async def readyz(request: HttpRequest) -> HttpResponseBase:
    """GET /readyz: 200 when the database, Redis (if configured) and the log backlog are fine, else 503
    naming what fails; checked at most once a second (see `readiness.py`)."""
    gateway = current()
    ready, body = await gateway.readiness.check(gateway)
    response = json_response(body, 200 if ready else 503)
    if not ready:
        response["retry-after"] = "1"
    return response
