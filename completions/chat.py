"""Serving one chat completion: pick routes, call the provider, relay the stream, fill the log record."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import orjson

from . import recorder
from .auth import Caller
from .limits import Admission, check_model, limiter, settle_soon
from .pricing import cost_nanos
from .errors import GatewayError, InternalError, UpstreamError
from .failover import call_with_failover, first_with_timeout, with_timeout
from .protocol import ChatCompletionRequest, ChunkFactory, usage
from .providers import Provider, Route
from .recorder import RequestRecord
from .routing import router
from .tokens import count_prompt, count_tokens

logger = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    """One server-sent event carrying `payload` as JSON."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def use_route(record: RequestRecord, route: Route) -> None:
    record.provider = route.provider
    record.upstream_model = route.upstream_model
    record.route_id = route.id
    record.input_price = route.input_price
    record.output_price = route.output_price


@dataclass
class Outcome:
    """What the view sends: a whole body or an SSE stream, plus headers (rate limits, route)."""

    body: dict[str, Any] | None = None
    stream: AsyncIterator[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def estimate(request: ChatCompletionRequest, route: Route) -> tuple[int, int]:
    """Worst-case tokens and cost known before the call: the prompt, plus `max_tokens` when given."""
    prompt = count_prompt(request.messages)
    output = (request.output_limit or 0) * request.choices
    return prompt + output, cost_nanos(prompt, output, route.input_price, route.output_price)


def route_headers(record: RequestRecord) -> dict[str, str]:
    """Which provider served the request and after how many attempts (for debugging clients)."""
    return {"x-gateway-provider": record.provider, "x-gateway-attempts": str(len(record.attempts))}


async def admit(caller: Caller, model: str, routes: list[Route], tokens: int, nanos: int) -> Admission:
    """The key's limits for this request (404 for a model outside its list, 429 when over a limit)."""
    check_model(caller.limits, model)
    return await limiter().admit(caller.key_id, caller.limits, tokens, nanos)


async def create(request: ChatCompletionRequest, record: RequestRecord, caller: Caller) -> Outcome:
    """Serve a chat completion: a whole response or, for `stream: true`, an SSE stream."""
    check_model(caller.limits, request.model)
    routes = await router.resolve(request.model)
    admission = await admit(caller, request.model, routes, *estimate(request, routes[0]))
    try:
        outcome = await _serve(request, record, routes, admission)
    except BaseException:
        settle_soon(admission, 0, 0)
        raise
    outcome.headers.update(admission.headers)
    outcome.headers.update(route_headers(record))
    return outcome


async def _serve(request: ChatCompletionRequest, record: RequestRecord, routes: list[Route], admission: Admission) -> Outcome:
    def check(provider: Provider) -> None:
        provider.check(request)

    if not request.stream:

        async def complete(provider: Provider, route: Route) -> dict[str, Any]:
            return await with_timeout(provider.complete(request), route.first_byte_timeout, route.provider)

        response, route = await call_with_failover(routes, record, router.provider, check, complete)
        use_route(record, route)
        record.set_usage(response.get("usage"))
        record.finish_reason = ",".join(sorted({str(c.get("finish_reason")) for c in response["choices"]}))
        settle_soon(admission, record.total_tokens, record.cost_nanos)
        return Outcome(body=response)

    async def open_stream(provider: Provider, route: Route) -> tuple[dict[str, Any], AsyncIterator[dict[str, Any]]]:
        stream = provider.stream(request)
        try:
            first = await first_with_timeout(stream, route.first_byte_timeout, route.provider)
        except StopAsyncIteration:
            raise UpstreamError(f"The {route.provider} upstream ended the stream without data.") from None
        except BaseException:
            await _close(stream)
            raise
        return first, stream

    (first, stream), route = await call_with_failover(routes, record, router.provider, check, open_stream)
    use_route(record, route)
    return Outcome(stream=relay(first, stream, request, record, route, admission))


async def _chunks(
    first: dict[str, Any], stream: AsyncIterator[dict[str, Any]], idle_timeout: float, provider: str
) -> AsyncIterator[dict[str, Any]]:
    """The first chunk, then the rest, each within the route's idle timeout."""
    yield first
    while True:
        try:
            chunk = await first_with_timeout(stream, idle_timeout, provider)
        except StopAsyncIteration:
            return
        yield chunk


async def relay(
    first: dict[str, Any],
    stream: AsyncIterator[dict[str, Any]],
    request: ChatCompletionRequest,
    record: RequestRecord,
    route: Route,
    admission: Admission | None = None,
) -> AsyncIterator[bytes]:
    """SSE bytes for each chunk as it arrives; the record is written when the stream ends, however it ends."""
    include_usage = request.include_usage
    finish: dict[int, str] = {}
    relayed_text: list[str] = []
    got_usage = False
    last: dict[str, Any] = first
    try:
        try:
            async for chunk in _chunks(first, stream, route.idle_timeout, route.provider):
                last = chunk
                choices = chunk["choices"]
                if not choices and chunk.get("usage"):
                    got_usage = True
                    record.set_usage(chunk["usage"])
                    if include_usage:
                        yield sse(chunk)
                    continue
                for c in choices:
                    if c.get("finish_reason"):
                        finish[c["index"]] = c["finish_reason"]
                    content = (c.get("delta") or {}).get("content")
                    if content:
                        relayed_text.append(content)
                if include_usage:
                    chunk["usage"] = None
                record.mark_first_chunk()
                yield sse(chunk)
            if not got_usage:
                _estimate_usage(record, request, relayed_text)
                if include_usage:
                    yield sse(_usage_chunk(last, record))
        except GatewayError as exc:
            # The stream had started: end it with an error event, as OpenAI does.
            record.fail(exc.status, exc.type, exc.code, exc.message)
            yield sse(exc.body())
        except Exception as exc:
            logger.exception("stream from %s failed", route.label)
            err = InternalError("The stream failed inside the gateway; it has been logged.")
            record.fail(err.status, err.type, err.code, f"{type(exc).__name__}")
            yield sse(err.body())
        yield DONE
    except (asyncio.CancelledError, GeneratorExit):
        record.client_disconnected = True
        raise
    finally:
        await _close(stream)
        record.finish_reason = ",".join(sorted(set(finish.values())))
        if not got_usage and not record.usage_estimated:
            _estimate_usage(record, request, relayed_text)
        settle_soon(admission, record.total_tokens, record.cost_nanos)
        recorder.submit(record)


def _estimate_usage(record: RequestRecord, request: ChatCompletionRequest, relayed_text: list[str]) -> None:
    """Count the tokens ourselves when the upstream reported none (e.g. the stream was cut short)."""
    record.prompt_tokens = count_prompt(request.messages)
    record.completion_tokens = count_tokens("".join(relayed_text))
    record.usage_estimated = True


def _usage_chunk(last: dict[str, Any], record: RequestRecord) -> dict[str, Any]:
    factory = ChunkFactory(last.get("model", ""), last.get("id"), last.get("created"))
    return factory.usage(usage(record.prompt_tokens, record.completion_tokens))


async def _close(stream: AsyncIterator[dict[str, Any]]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # the upstream is gone either way
            logger.debug("closing an upstream stream failed", exc_info=True)
