"""Serving one chat completion: pick routes, call the provider, relay the stream, fill the log record."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

import orjson

from . import recorder
from .errors import GatewayError, InternalError
from .protocol import ChatCompletionRequest
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


async def create(request: ChatCompletionRequest, record: RequestRecord) -> dict[str, Any] | AsyncIterator[bytes]:
    """A whole response (dict) or, for `stream: true`, an async iterator of SSE bytes."""
    routes = await router.resolve(request.model)
    route = routes[0]
    provider = router.provider(route)
    provider.check(request)
    use_route(record, route)
    if not request.stream:
        response = await provider.complete(request)
        record.set_usage(response.get("usage"))
        record.finish_reason = ",".join(sorted({c["finish_reason"] for c in response["choices"]}))
        return response
    stream = provider.stream(request)
    return relay(stream, request, record, provider)


async def relay(
    stream: AsyncIterator[dict[str, Any]],
    request: ChatCompletionRequest,
    record: RequestRecord,
    provider: Provider,
) -> AsyncIterator[bytes]:
    """SSE bytes for each chunk as it arrives; the record is written when the stream ends, however it ends."""
    include_usage = request.include_usage
    finish: dict[int, str] = {}
    relayed_text: list[str] = []
    got_usage = False
    try:
        try:
            async for chunk in stream:
                choices = chunk["choices"]
                if not choices and "usage" in chunk:
                    got_usage = True
                    record.set_usage(chunk["usage"])
                    if include_usage:
                        yield sse(chunk)
                    continue
                for c in choices:
                    if c.get("finish_reason"):
                        finish[c["index"]] = c["finish_reason"]
                    content = c["delta"].get("content")
                    if content:
                        relayed_text.append(content)
                if include_usage:
                    chunk["usage"] = None
                record.mark_first_chunk()
                yield sse(chunk)
        except GatewayError as exc:
            # The stream had started: end it with an error event, as OpenAI does.
            record.fail(exc.status, exc.type, exc.code, exc.message)
            yield sse(exc.body())
        except Exception as exc:
            logger.exception("stream from %s failed", provider.route.label)
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
        if not got_usage:
            record.prompt_tokens = count_prompt(request.messages)
            record.completion_tokens = count_tokens("".join(relayed_text))
            record.usage_estimated = True
        recorder.submit(record)


async def _close(stream: AsyncIterator[dict[str, Any]]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # the upstream is gone either way
            logger.debug("closing an upstream stream failed", exc_info=True)
