"""Serving one chat completion: pick routes, call the provider, relay the stream, fill the log record."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import recorder
from .auth import Caller
from .errors import GatewayError, InternalError, UpstreamError, upstream_timeout
from .failover import call_with_failover, first_with_timeout, with_timeout
from .limits import Admission, check_model, limiter, settle_soon
from .pricing import cost_nanos
from .protocol import ChatCompletionRequest, ChunkFactory, usage
from .providers import Prepared, Provider, Route
from .recorder import RequestRecord
from .routing import router
from .tokens import count_prompt, count_response, count_tokens

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


async def route_and_admit(
    caller: Caller, model: str, estimate_for: Callable[[Route], tuple[int, int]]
) -> tuple[list[Route], Admission]:
    """The routes for `model` and the request's share of the key's limits.

    404 for a model outside the key's list or unknown, 429 when over a limit. The
    estimate (tokens, cost in nanos against the first route) is only computed for
    keys that have a limit to check it against.
    """
    check_model(caller.limits, model)
    routes = await router.resolve(model)
    tokens, nanos = estimate_for(routes[0]) if caller.limits.any else (0, 0)
    return routes, await limiter().admit(caller.key_id, caller.limits, tokens, nanos)


async def create(request: ChatCompletionRequest, record: RequestRecord, caller: Caller) -> Outcome:
    """Serve a chat completion: a whole response or, for `stream: true`, an SSE stream."""
    routes, admission = await route_and_admit(caller, request.model, lambda route: estimate(request, route))
    try:
        outcome = await _serve(request, record, routes, admission)
    except BaseException:
        settle_soon(admission, 0, 0)
        raise
    outcome.headers.update(admission.headers)
    outcome.headers.update(route_headers(record))
    return outcome


async def _serve(
    request: ChatCompletionRequest, record: RequestRecord, routes: list[Route], admission: Admission
) -> Outcome:
    prepared: dict[Provider, Prepared[Any]] = {}

    def prepare(provider: Provider) -> None:
        """Once per route, before its first attempt: every retry on it sends the same translation."""
        prepared[provider] = provider.prepare(request)

    if not request.stream:

        async def complete(provider: Provider, route: Route) -> dict[str, Any]:
            return await with_timeout(provider.complete(prepared[provider]), route.first_byte_timeout, route.provider)

        response, route = await call_with_failover(routes, record, router.provider, prepare, complete)
        use_route(record, route)
        if not response.get("usage"):
            # The upstream reported none: count it ourselves, and say so in the log.
            response["usage"] = usage(count_prompt(request.messages), count_response(response))
            record.usage_estimated = True
        record.set_usage(response["usage"])
        record.finish_reason = ",".join(sorted({str(c.get("finish_reason")) for c in response["choices"]}))
        settle_soon(admission, record.total_tokens, record.cost_nanos)
        return Outcome(body=response)

    async def open_stream(provider: Provider, route: Route) -> tuple[dict[str, Any], AsyncIterator[dict[str, Any]]]:
        stream = provider.stream(prepared[provider])
        try:
            first = await first_with_timeout(stream, route.first_byte_timeout, route.provider)
        except StopAsyncIteration:
            raise UpstreamError(f"The {route.provider} upstream ended the stream without data.") from None
        except BaseException:
            await _close(stream)
            raise
        return first, stream

    (first, stream), route = await call_with_failover(routes, record, router.provider, prepare, open_stream)
    use_route(record, route)
    return Outcome(stream=Relay(first, stream, request, record, route, admission))


class Relay:
    """The SSE bytes of one stream, relayed chunk by chunk as the upstream produces them.

    However the stream ends (done, upstream error, client gone, or closed before
    its first byte was even asked for), `_finish()` runs exactly once: it closes
    the upstream, completes the usage, settles the key's limits and queues the
    log row.
    """

    def __init__(
        self,
        first: dict[str, Any],
        stream: AsyncIterator[dict[str, Any]],
        request: ChatCompletionRequest,
        record: RequestRecord,
        route: Route,
        admission: Admission | None = None,
    ) -> None:
        self.first, self.stream, self.request, self.record, self.route, self.admission = (
            first,
            stream,
            request,
            record,
            route,
            admission,
        )
        self.finish_reasons: dict[int, str] = {}
        self.relayed_text: list[str] = []
        self.got_usage = False
        self.finished = False
        self._events = self._run()

    def __aiter__(self) -> Relay:
        return self

    async def __anext__(self) -> bytes:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        """Stop relaying; a stream closed before it ended counts as a client disconnect."""
        if not self.finished:
            self.record.client_disconnected = True
        await self._events.aclose()  # runs _run's cleanup if it had started
        await self._finish()  # and this one if it had not

    async def _run(self) -> AsyncIterator[bytes]:
        record = self.record
        idle = self.route.idle_timeout
        loop = asyncio.get_running_loop()
        last = self.first
        try:
            try:
                # One deadline for the whole stream, moved before each upstream read (and
                # lifted while the client is being sent a chunk): cheaper than a timeout
                # context per chunk, and a slow client never counts against the upstream.
                async with asyncio.timeout(None) as deadline:
                    chunk = self.first
                    while True:
                        last = chunk
                        event = self._event(chunk)
                        if event is not None:
                            yield event
                        deadline.reschedule(loop.time() + idle)
                        try:
                            chunk = await anext(self.stream)
                        except StopAsyncIteration:
                            deadline.reschedule(None)
                            break
                        deadline.reschedule(None)
                if not self.got_usage:
                    self._estimate_usage()
                    if self.request.include_usage:
                        yield sse(_usage_chunk(last, record))
            except TimeoutError:
                err = upstream_timeout(self.route.provider, f"no data for {idle:g} s")
                record.fail(err.status, err.type, err.code, err.message)
                yield sse(err.body())
            except GatewayError as exc:
                # The stream had started: end it with an error event, as OpenAI does.
                record.fail(exc.status, exc.type, exc.code, exc.message)
                yield sse(exc.body())
            except Exception as exc:
                logger.exception("stream from %s failed", self.route.label)
                err = InternalError("The stream failed inside the gateway; it has been logged.")
                record.fail(err.status, err.type, err.code, f"{type(exc).__name__}")
                yield sse(err.body())
            yield DONE
        except (asyncio.CancelledError, GeneratorExit):
            record.client_disconnected = True
            raise
        finally:
            await self._finish()

    def _event(self, chunk: dict[str, Any]) -> bytes | None:
        """The SSE bytes for one upstream chunk (None for a usage chunk the client didn't ask for)."""
        choices = chunk["choices"]
        if not choices and chunk.get("usage"):
            self.got_usage = True
            self.record.set_usage(chunk["usage"])
            return sse(chunk) if self.request.include_usage else None
        self._note(choices)
        if self.request.include_usage:
            chunk["usage"] = None
        self.record.mark_first_chunk()
        return sse(chunk)

    def _note(self, choices: list[dict[str, Any]]) -> None:
        """Remember finish reasons and the text relayed (to count it if no usage comes)."""
        for c in choices:
            if c.get("finish_reason"):
                self.finish_reasons[c["index"]] = c["finish_reason"]
            content = (c.get("delta") or {}).get("content")
            if content:
                self.relayed_text.append(content)

    def _estimate_usage(self) -> None:
        """Count the tokens ourselves when the upstream reported none (e.g. the stream was cut short)."""
        self.record.prompt_tokens = count_prompt(self.request.messages)
        self.record.completion_tokens = count_tokens("".join(self.relayed_text))
        self.record.usage_estimated = True

    async def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        record = self.record
        try:
            await _close(self.stream)
        finally:
            record.finish_reason = ",".join(sorted(set(self.finish_reasons.values())))
            if not self.got_usage and not record.usage_estimated:
                self._estimate_usage()
            settle_soon(self.admission, record.total_tokens, record.cost_nanos)
            recorder.submit(record)


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
