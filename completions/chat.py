"""Serving one chat completion, top to bottom: routes, admission, failover, the answer or the stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from django.http import HttpResponseBase

from .exchange import Exchange
from .failover import with_timeout
from .pricing import cost_nanos
from .protocol import ChatCompletionRequest, usage
from .providers import Route
from .relay import Relay, first_chunk
from .tokens import count_prompt, count_response


def estimate(request: ChatCompletionRequest, route: Route) -> tuple[int, int]:
    """Worst-case tokens and cost known before the call: the prompt, plus `max_tokens` when given."""
    prompt = count_prompt(request.messages)
    output = (request.output_limit or 0) * request.choices
    return prompt + output, cost_nanos(prompt, output, route.input_price, route.output_price)


async def create(ex: Exchange, request: ChatCompletionRequest) -> HttpResponseBase:
    """A whole `CreateChatCompletionResponse` or, for `stream: true`, an SSE stream of chunks."""
    routes = await admit(ex, request)
    if request.stream:
        route, first, stream = await open_stream(ex, request, routes)
        return ex.respond_stream(Relay(ex, request, route, first, stream))
    return ex.respond(await complete(ex, request, routes))


# The steps, also used by the other inbound APIs (they translate their request to a chat request,
# and the answer or the chunks back into their own shapes).


async def admit(ex: Exchange, request: ChatCompletionRequest) -> list[Route]:
    """The routes for the request's model, once the caller's limits admitted it."""
    routes = await ex.resolve(request.model)
    await ex.admit(estimate(request, routes[0]) if ex.limited else (0, 0))
    return routes


async def complete(ex: Exchange, request: ChatCompletionRequest, routes: list[Route]) -> dict[str, Any]:
    """The whole answer from the first route that gives one, accounted in the log record."""
    async for attempt in ex.failover(routes, request):
        async with attempt:
            route = attempt.route
            call = attempt.provider.complete(attempt.prepared)
            answer = await with_timeout(call, route.first_byte_timeout, route.provider)
    ex.served_by(attempt.route)
    _account(ex, request, answer)
    return answer


async def open_stream(
    ex: Exchange, request: ChatCompletionRequest, routes: list[Route]
) -> tuple[Route, dict[str, Any], AsyncIterator[dict[str, Any]]]:
    """The route, first chunk and the rest of a stream. An attempt succeeds once the upstream
    produced its first chunk: until then, failover may retry."""
    async for attempt in ex.failover(routes, request):
        async with attempt:
            stream = attempt.provider.stream(attempt.prepared)
            first = await first_chunk(stream, attempt.route)
    ex.served_by(attempt.route)
    return attempt.route, first, stream


def _account(ex: Exchange, request: ChatCompletionRequest, answer: dict[str, Any]) -> None:
    """Usage, finish reason and the text of a whole answer, for the log."""
    if answer.get("usage"):
        ex.use_reported(answer["usage"])
    else:
        # The upstream reported none: count it ourselves, and say so in the log.
        answer["usage"] = usage(count_prompt(request.messages), count_response(answer))
        ex.use(answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"], counted_here=True)
    choices = answer["choices"]
    ex.ended((str(c.get("finish_reason")) for c in choices), (c["message"].get("content") or "" for c in choices))
