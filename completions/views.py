"""HTTP glue for the OpenAI-compatible endpoints: parse, authenticate, call the service, answer."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse

from . import chat, embeddings, recorder
from .auth import Caller, authenticate
from .errors import GatewayError, InternalError, MethodNotAllowed, ModelNotFound, NotFound, error_response
from .protocol import ChatCompletionRequest, EmbeddingRequest, Wire, model_entry, parse_json_object, validate
from .recorder import RequestRecord
from .routing import router

STARTED = int(time.time())  # `created` of the models listed (routes have no age that matters to clients)

logger = logging.getLogger(__name__)

View = Callable[..., Awaitable[HttpResponseBase]]


def json_response(payload: Any, status: int = 200) -> HttpResponse:
    body = orjson.dumps(payload)
    response = HttpResponse(body, status=status, content_type="application/json")
    response["Content-Length"] = str(len(body))
    return response


def with_headers(response: HttpResponseBase, headers: dict[str, str]) -> HttpResponseBase:
    for name, value in headers.items():
        response[name] = value
    return response


def sse_response(events: Any) -> StreamingHttpResponse:
    """`text/event-stream` over an async iterator of SSE bytes, with buffering disabled."""
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    # The gateway handler closes this iterator itself when the client goes away.
    response.gateway_stream = events  # type: ignore[attr-defined]
    return response


def api_view(*methods: str) -> Callable[[View], View]:
    """Allow only `methods`; turn any failure into OpenAI's error envelope, never a traceback."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            try:
                if request.method not in methods:
                    raise MethodNotAllowed(f"Invalid method for URL ({request.method} {request.path}).")
                return await view(request, *args, **kwargs)
            except GatewayError as exc:
                return error_response(exc)
            except Exception:
                logger.exception("unhandled error in %s", request.path)
                return error_response(InternalError("The gateway hit an internal error; it has been logged."))

        return wrapper

    return decorate


def _start_record(request: HttpRequest, endpoint: str) -> RequestRecord:
    return RequestRecord(request_id=getattr(request, "request_id", ""), endpoint=endpoint)


def _identify(record: RequestRecord, caller: Caller) -> None:
    record.key_id = caller.key_id
    record.key_prefix = caller.prefix
    record.user_id = caller.user_id


def _describe(record: RequestRecord, body: dict[str, Any]) -> None:
    """Fill what the raw body tells, so even a rejected request is logged with its model."""
    model = body.get("model")
    record.model = model if isinstance(model, str) else ""
    record.stream = body.get("stream") is True
    end_user = body.get("safety_identifier") or body.get("user")
    record.end_user = end_user if isinstance(end_user, str) else ""
    metadata = body.get("metadata")
    record.metadata = metadata if isinstance(metadata, dict) else None
    if settings.GATEWAY_LOG_CONTENT:
        record.request_body = body


async def logged(record: RequestRecord, work: Callable[[], Awaitable[HttpResponseBase]]) -> HttpResponseBase:
    """Run `work`; every outcome but a started stream is logged here (a stream logs when it ends)."""
    try:
        response = await work()
    except GatewayError as exc:
        record.fail(exc.status, exc.type, exc.code, exc.message)
        recorder.submit(record)
        raise
    except asyncio.CancelledError:
        record.client_disconnected = True
        record.fail(499, "client_disconnected", None, "The client closed the connection before the answer.")
        recorder.submit(record)
        raise
    except Exception as exc:
        record.fail(500, "server_error", "internal_error", f"{type(exc).__name__}")
        recorder.submit(record)
        raise
    if not getattr(response, "streaming", False):
        recorder.submit(record)
    return response


async def _accept(request: HttpRequest, record: RequestRecord, model: type[Wire]) -> tuple[Caller, Any]:
    """Authenticate, parse and validate: the caller and the typed request, or the 4xx."""
    caller = await authenticate(request)
    _identify(record, caller)
    body = parse_json_object(request.body)
    _describe(record, body)
    return caller, validate(model, body)


@api_view("POST")
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    """POST /v1/chat/completions."""
    record = _start_record(request, "chat.completions")

    async def work() -> HttpResponseBase:
        caller, chat_request = await _accept(request, record, ChatCompletionRequest)
        outcome = await chat.create(chat_request, record, caller)
        if outcome.body is not None:
            if settings.GATEWAY_LOG_CONTENT:
                record.response_text = "\n".join(c["message"].get("content") or "" for c in outcome.body["choices"])
            return with_headers(json_response(outcome.body), outcome.headers)
        return with_headers(sse_response(outcome.stream), outcome.headers)

    return await logged(record, work)


@api_view("POST")
async def create_embeddings(request: HttpRequest) -> HttpResponseBase:
    """POST /v1/embeddings."""
    record = _start_record(request, "embeddings")

    async def work() -> HttpResponseBase:
        caller, embedding_request = await _accept(request, record, EmbeddingRequest)
        outcome = await embeddings.create(embedding_request, record, caller)
        return with_headers(json_response(outcome.body), outcome.headers)

    return await logged(record, work)


@api_view("GET")
async def list_models(request: HttpRequest) -> HttpResponseBase:
    """GET /v1/models: the models this key may use."""
    caller = await authenticate(request)
    table = await router.table()
    names = [name for name in table.model_ids() if caller.limits.allows(name)]
    data = [model_entry(name, table.routes_for(name)[0].provider, STARTED) for name in names]
    return json_response({"object": "list", "data": data})


@api_view("GET")
async def retrieve_model(request: HttpRequest, model: str) -> HttpResponseBase:
    """GET /v1/models/{model}."""
    caller = await authenticate(request)
    table = await router.table()
    routes = table.routes_for(model)
    if not routes or not caller.limits.allows(model):
        raise ModelNotFound(model)
    return json_response(model_entry(model, routes[0].provider, STARTED))


@api_view("GET")
async def healthz(request: HttpRequest) -> HttpResponseBase:
    """GET /healthz: the process serves requests; how many log rows wait to be written."""
    return json_response({"status": "ok", "log_backlog": recorder.writer.pending()})


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Unknown URL: OpenAI's 404 envelope."""
    rid = getattr(request, "request_id", None)
    return error_response(NotFound(f"Invalid URL ({request.method} {request.path}).", code=None), rid)


def server_error(request: HttpRequest) -> HttpResponse:
    return error_response(InternalError("The gateway hit an internal error; it has been logged."))


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    from .errors import InvalidRequest

    return error_response(InvalidRequest("Bad request."))


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    from .errors import PermissionDenied

    return error_response(PermissionDenied("You are not allowed to do this."))
