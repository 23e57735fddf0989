"""Serving one Messages request, top to bottom, through the chat steps: routes, admission,
failover, the answer or the stream, one log row (endpoint `messages`).

The request is translated to a chat request once (`translate.to_chat`), which every route's
provider takes and the limits and the log count with; each route is prepared by
`Preparation`, which turns what the route can't honour into Anthropic's 400 naming the field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from django.http import HttpResponseBase

from .. import chat
from ..errors import InvalidRequest
from ..exchange import Exchange
from ..failover import with_timeout
from ..providers import Prepared, Provider, Route
from ..relay import Relay, first_chunk
from ..tokens import count_prompt
from . import protocol as m
from . import translate
from .translate import MessagesSSE, Translated

ENDPOINT = "messages"
COUNT_ENDPOINT = "messages.count_tokens"


class Preparation:
    """How each route's provider gets a Messages request (a `failover.Preparer`)."""

    def __init__(self, translated: Translated) -> None:
        self.translated = translated

    def __call__(self, provider: Provider) -> Prepared[Any]:
        translated = self.translated
        if translated.problems:
            raise translated.problems[0].error()
        try:
            return provider.prepare(translated.chat)
        except InvalidRequest as exc:
            raise translated.reword(exc) from None


def describe(ex: Exchange, request: m.CountTokensRequest) -> None:
    """What the log row keeps of a Messages request beyond what `Exchange.accept` took."""
    metadata = getattr(request, "metadata", None)
    if metadata is not None and metadata.user_id:
        ex.record.end_user = metadata.user_id


async def create(ex: Exchange, request: m.MessagesRequest) -> HttpResponseBase:
    """A whole Anthropic `Message` or, for `stream: true`, Anthropic's event stream."""
    describe(ex, request)
    translated = translate.to_chat(request)
    routes = await chat.admit(ex, translated.chat)
    prepare = Preparation(translated)
    stops = request.stop_sequences or []
    if request.stream:
        route, first, stream = await open_stream(ex, translated, routes, prepare)
        dialect = MessagesSSE(route.upstream_model, count_prompt(translated.chat.messages), stops)
        return ex.respond_stream(Relay(ex, translated.chat, route, first, stream, dialect=dialect))
    answer = await complete(ex, translated, routes, prepare)
    return ex.respond(translate.to_message(answer, stops))


async def complete(ex: Exchange, translated: Translated, routes: list[Route], prepare: Preparation) -> dict[str, Any]:
    """The chat answer from the first route that gives one, accounted in the log record."""
    async for attempt in ex.failover(routes, translated.chat, prepare):
        async with attempt:
            route = attempt.route
            call = attempt.provider.complete(attempt.prepared)
            answer = await with_timeout(call, route.first_byte_timeout, route.provider)
    ex.served_by(attempt.route)
    chat.account(ex, translated.chat, answer)
    return answer


async def open_stream(
    ex: Exchange, translated: Translated, routes: list[Route], prepare: Preparation
) -> tuple[Route, dict[str, Any], AsyncIterator[dict[str, Any]]]:
    """The route, first chunk and the rest of a chat stream (failover until a first chunk came)."""
    async for attempt in ex.failover(routes, translated.chat, prepare):
        async with attempt:
            stream = attempt.provider.stream(attempt.prepared)
            first = await first_chunk(stream, attempt.route)
    ex.served_by(attempt.route)
    return attempt.route, first, stream


async def count_tokens(ex: Exchange, request: m.CountTokensRequest) -> HttpResponseBase:
    """`{"input_tokens": N}`: the gateway's own count. Counting is free: the request is admitted
    against the caller's request rate, with no tokens, and logs none."""
    translated = translate.to_chat(request)
    routes = await ex.resolve(request.model)
    await ex.admit((0, 0))
    ex.served_by(routes[0])
    return ex.respond({"input_tokens": translate.count_input_tokens(translated)})
