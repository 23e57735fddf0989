"""One request's life: who called, what they asked, which route served it, and how it ended.

A view opens an `Exchange` around its work (`async with Exchange.open(request,
endpoint) as ex:`) and calls its named steps in order: `accept` (authenticate,
parse, validate), `resolve` (the routes of the model the key may use), `admit`
(the request's share of the key's limits), `failover` (the attempts over the
routes), `served_by`, and finally `respond` or `respond_stream`. Whatever
happens (an answer, an error, the client leaving, a stream's end), `close()`
runs exactly once: it is the one place where the log row is submitted and the
limits are settled. A non-streamed exchange closes when the view's block ends;
a streamed one hands closing to its stream, which closes when the stream ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Protocol, TypeVar

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from . import logs, metrics
from .app import Gateway, current
from .auth import authenticate
from .caller import Caller
from .circuit import DEPENDENCY_ERRORS
from .errors import GatewayError, ModelNotFound, QuotaExceeded, RateLimited, dependency_unavailable
from .failover import Failover, Preparer
from .limits import Admission
from .protocol import ChatCompletionRequest, Wire, parse_json_object, validate
from .providers import Route
from .recorder import RequestRecord

W = TypeVar("W", bound=Wire)
logger = logging.getLogger(__name__)


class ClosableStream(Protocol):
    """An SSE byte stream that closes its exchange when it ends or is closed."""

    def __aiter__(self) -> Any: ...

    async def aclose(self) -> None: ...


def json_response(payload: Any, status: int = 200) -> HttpResponse:
    body = orjson.dumps(payload)
    response = HttpResponse(body, status=status, content_type="application/json")
    response["Content-Length"] = str(len(body))
    return response


def sse_response(events: ClosableStream) -> StreamingHttpResponse:
    """`text/event-stream` over an async iterator of SSE bytes, with buffering disabled."""
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    # The gateway handler sends this iterator itself and always closes it at the end.
    response.gateway_stream = events
    return response


class Exchange:
    """The owner of one request's life; see the module docstring for the order of its steps."""

    def __init__(self, gateway: Gateway, request_id: str, endpoint: str) -> None:
        self.gateway = gateway
        self.record = RequestRecord(request_id=request_id, endpoint=endpoint)
        self.caller: Caller | None = None
        self.admission: Admission | None = None
        self.route: Route | None = None
        self.stream: ClosableStream | None = None  # set once a stream took over closing
        self.notes: dict[str, str] = {}  # response headers the serving provider added (`Prepared.notes`)
        self.resolved = False  # the model is one the route table serves (its name may label metrics)
        self.refused = ""  # which of the gateway's limits refused the request (requests, tokens, budget)
        self.closed = False
        gateway.inflight += 1

    @classmethod
    def open(cls, request: HttpRequest, endpoint: str) -> Exchange:
        return cls(current(), getattr(request, "request_id", ""), endpoint)

    async def __aenter__(self) -> Exchange:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            if self.stream is None:
                self.close()
            return
        self.fail(exc)
        if isinstance(exc, GatewayError):
            exc.headers.update(self.route_headers())  # the error boundary renders them with the error
        if self.stream is not None:
            await self.stream.aclose()  # never sent: it closes this exchange as it stops
        self.close()

    # ---- the steps, in order ---------------------------------------------------------------

    async def accept(self, http: HttpRequest, model: type[W]) -> W:
        """Authenticate, parse and validate: the typed request, or the 4xx."""
        self.caller = caller = await authenticate(http, self.gateway.keys)
        record = self.record
        record.key_id, record.key_prefix, record.user_id = caller.key_id, caller.prefix, caller.user_id
        body = parse_json_object(http.body)
        self._describe(body)
        validated: W = validate(model, body)
        return validated

    async def resolve(self, model: str) -> list[Route]:
        """The routes to try for `model`: 404 for a model outside the key's list or unknown."""
        assert self.caller is not None
        if not self.caller.allows(model):
            raise ModelNotFound(model)
        routes = await self.gateway.router.resolve(model)
        self.resolved = True
        return routes

    @property
    def limited(self) -> bool:
        """Whether the caller has a limit that needs the request's estimated tokens and cost."""
        return self.caller is not None and self.caller.limited

    async def admit(self, estimate: tuple[int, int] = (0, 0)) -> None:
        """Take the request's share of the key's limits (estimated tokens, cost in nanos), or the 429."""
        assert self.caller is not None
        tokens, nanos = estimate
        try:
            self.admission = await self.gateway.limiter.admit(self.caller.scopes, tokens, nanos)
        except QuotaExceeded:
            self.refused = "budget"
            raise
        except RateLimited as exc:
            self.refused = exc.type  # requests or tokens
            raise

    def failover(
        self, routes: list[Route], request: ChatCompletionRequest | None = None, prepare: Preparer | None = None
    ) -> Failover:
        """The attempts over `routes`, each recorded in the log row (`prepare`: see `Failover`)."""
        gw = self.gateway
        attempts, model = self.record.attempts, self.record.model
        return Failover(routes, gw.breakers, gw.router.provider, attempts, model, request, prepare)

    def served_by(self, route: Route, notes: dict[str, str] | None = None) -> None:
        """The route that answered, and what its provider said about the answer in headers (`notes`)."""
        self.route = route
        self.notes.update(notes or {})
        record = self.record
        record.provider, record.upstream_model, record.route_id = route.provider, route.upstream_model, route.id
        record.input_price, record.output_price = route.input_price, route.output_price

    # ---- what the answer was (the only writers of the record's outcome) ----------------------

    def use(self, prompt_tokens: int, completion_tokens: int, *, counted_here: bool = False) -> None:
        """The tokens the request used; `counted_here` when the upstream reported none."""
        record = self.record
        record.prompt_tokens, record.completion_tokens = prompt_tokens, completion_tokens
        record.usage_estimated = record.usage_estimated or counted_here

    def use_reported(self, usage: dict[str, Any]) -> None:
        """The upstream's own usage (`CompletionUsage`)."""
        self.use(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))

    def first_byte(self) -> None:
        self.record.mark_first_chunk()

    def ended(self, finish_reasons: Iterable[str], texts: Iterable[str]) -> None:
        """How the answer ended, and (with content logging) its text, one line per choice."""
        self.record.finish_reason = ",".join(sorted(set(finish_reasons)))
        if settings.GATEWAY_LOG_CONTENT:
            self.record.response_text = "\n".join(texts)

    def client_left(self) -> None:
        self.record.client_disconnected = True

    @property
    def usage(self) -> tuple[int, int]:
        return self.record.prompt_tokens, self.record.completion_tokens

    # ---- the answer ------------------------------------------------------------------------

    def respond(self, body: dict[str, Any]) -> HttpResponse:
        """The whole answer as JSON, with the rate-limit and route headers."""
        return self._with_headers(json_response(body))

    def respond_stream(self, stream: ClosableStream) -> StreamingHttpResponse:
        """An SSE answer; from here on `stream` closes this exchange when it ends."""
        self.stream = stream
        metrics.STREAMS.inc()
        return self._with_headers(sse_response(stream))

    # ---- the end -----------------------------------------------------------------------------

    def fail(self, exc: BaseException) -> None:
        """Record why the request failed (the client sees the error from the error boundary)."""
        record = self.record
        if isinstance(exc, DEPENDENCY_ERRORS):
            exc = dependency_unavailable("answer this request")
        if isinstance(exc, GatewayError):
            record.fail(exc.status, exc.type, exc.code, exc.loggable_message())
        elif isinstance(exc, asyncio.CancelledError):
            self.client_left()
            record.fail(499, "client_disconnected", None, "The client closed the connection before the answer.")
        else:
            record.fail(500, "server_error", "internal_error", type(exc).__name__)

    def close(self) -> None:
        """Settle the limits with what the request used, queue its log row, count it in the metrics
        and write its log line (once)."""
        if self.closed:
            return
        self.closed = True
        self.gateway.inflight -= 1
        record = self.record
        if not record.latency_ms:
            record.latency_ms = record.elapsed_ms()
        if self.admission is not None:
            self.gateway.limiter.settle_soon(self.admission, record.total_tokens, record.cost_nanos)
        self.gateway.log.submit(record)
        try:
            if self.stream is not None:
                metrics.STREAMS.dec()
            metrics.observe(self)
            logs.request_line(self)
        except Exception:  # telemetry never fails a request
            logger.exception("recording metrics or the log line of %s failed", record.request_id)

    # ---- helpers -----------------------------------------------------------------------------

    def _describe(self, body: dict[str, Any]) -> None:
        """Fill what the raw body tells, so even a rejected request is logged with its model."""
        record = self.record
        model = body.get("model")
        record.model = model if isinstance(model, str) else ""
        record.stream = body.get("stream") is True
        end_user = body.get("safety_identifier") or body.get("user")
        record.end_user = end_user if isinstance(end_user, str) else ""
        metadata = body.get("metadata")
        record.metadata = metadata if isinstance(metadata, dict) else None
        if settings.GATEWAY_LOG_CONTENT:
            record.request_body = body

    def route_headers(self) -> dict[str, str]:
        """`x-gateway-provider` / `x-gateway-attempts`: the route that answered (or, for an error, the
        last route tried) and how many attempts there were; none when no route was tried."""
        attempts = self.record.attempts
        if self.route is not None:
            provider = self.route.provider
        else:
            tried = [a for a in attempts if not a.get("skipped")]
            if not tried:
                return {}
            provider = str(tried[-1]["provider"])
        return {"x-gateway-provider": provider, "x-gateway-attempts": str(len(attempts)), **self.notes}

    def _with_headers(self, response: Any) -> Any:
        if self.admission is not None:
            for name, value in self.admission.headers.items():
                response[name] = value
        for name, value in self.route_headers().items():
            response[name] = value
        return response
