"""Serving one Messages request, top to bottom, through the chat steps: routes, admission,
failover, the answer or the stream, one log row (endpoint `messages`).

The request is translated to a chat request once (`translate.to_chat`), which the limits and the
log count with and every route that is not Anthropic's takes; an Anthropic route takes the
request natively, as the client sent it (`native`). Each route is prepared by `Preparation`,
which turns what a translated route can't honour into Anthropic's 400 naming the field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from django.http import HttpRequest, HttpResponseBase

from .. import chat
from ..errors import InvalidRequest
from ..exchange import Exchange
from ..failover import with_timeout
from ..protocol import parse_json_object
from ..providers import Prepared, Provider, Route
from ..providers.anthropic import AnthropicProvider, NativeMessages
from ..relay import Relay, StreamDialect, first_chunk
from ..tokens import count_prompt
from . import protocol as m
from . import translate
from .native import NativeSSE, carried
from .native import account as native_account
from .translate import MessagesSSE, Translated

ENDPOINT = "messages"
COUNT_ENDPOINT = "messages.count_tokens"
# The client's headers an Anthropic route receives as they came.
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")
Native = tuple[dict[str, Any], dict[str, str]]


class Preparation:
    """How each route's provider gets a Messages request (a `failover.Preparer`): an Anthropic route
    natively (the body as sent), any other the chat translation, refused where it can't honour it.
    For counting tokens (`counting`), a route that is not Anthropic's needs no preparation."""

    def __init__(self, translated: Translated, native: Native | None, counting: bool = False) -> None:
        self.translated = translated
        self.native = native
        self.counting = counting

    def __call__(self, provider: Provider) -> Prepared[Any]:
        translated = self.translated
        if self.native is not None and isinstance(provider, AnthropicProvider):
            body, headers = self.native
            return provider.prepare_native(translated.chat, body, headers)
        if self.counting:
            return Prepared(translated.chat, None)
        if translated.problems:
            raise translated.problems[0].error()
        try:
            return provider.prepare(translated.chat)
        except InvalidRequest as exc:
            raise translated.reword(exc) from None


def is_native(prepared: Prepared[Any]) -> bool:
    return isinstance(prepared.payload, NativeMessages)


def native_request(http: HttpRequest, routes: list[Route]) -> Native | None:
    """The body as sent and the headers to forward, when one of the routes is Anthropic's."""
    if not any(route.provider == "anthropic" for route in routes):
        return None
    headers = {name: http.headers[name] for name in FORWARDED_HEADERS if http.headers.get(name)}
    return parse_json_object(http.body), headers


def describe(ex: Exchange, request: m.CountTokensRequest) -> None:
    """What the log row keeps of a Messages request beyond what `Exchange.accept` took."""
    metadata = getattr(request, "metadata", None)
    if metadata is not None and metadata.user_id:
        ex.record.end_user = metadata.user_id


async def create(ex: Exchange, request: m.MessagesRequest, http: HttpRequest) -> HttpResponseBase:
    """A whole Anthropic `Message` or, for `stream: true`, Anthropic's event stream."""
    describe(ex, request)
    translated = translate.to_chat(request)
    routes = await chat.admit(ex, translated.chat)
    prepare = Preparation(translated, native_request(http, routes))
    stops = request.stop_sequences or []
    if request.stream:
        route, first, stream, native = await open_stream(ex, translated, routes, prepare)
        dialect: StreamDialect = (
            NativeSSE() if native else MessagesSSE(route.upstream_model, count_prompt(translated.chat.messages), stops)
        )
        return ex.respond_stream(Relay(ex, translated.chat, route, first, stream, dialect=dialect))
    return ex.respond(await complete(ex, translated, routes, prepare, stops))


async def complete(
    ex: Exchange, translated: Translated, routes: list[Route], prepare: Preparation, stops: list[str]
) -> dict[str, Any]:
    """The `Message` from the first route that gives one, accounted in the log record."""
    async for attempt in ex.failover(routes, translated.chat, prepare):
        async with attempt:
            route, provider, prepared = attempt.route, attempt.provider, attempt.prepared
            native = is_native(prepared)
            call = anthropic(provider).native_create(prepared) if native else provider.complete(prepared)
            answer = await with_timeout(call, route.first_byte_timeout, route.provider)
    ex.served_by(attempt.route)
    if native:
        native_account(ex, answer)
        return answer
    chat.account(ex, translated.chat, answer)
    return translate.to_message(answer, stops)


async def open_stream(
    ex: Exchange, translated: Translated, routes: list[Route], prepare: Preparation
) -> tuple[Route, dict[str, Any], AsyncIterator[dict[str, Any]], bool]:
    """The route, first chunk and the rest of a stream, and whether it is the upstream's own
    Anthropic events (failover until a first chunk came)."""
    async for attempt in ex.failover(routes, translated.chat, prepare):
        async with attempt:
            provider, prepared = attempt.provider, attempt.prepared
            native = is_native(prepared)
            stream = carried(anthropic(provider).native_stream(prepared)) if native else provider.stream(prepared)
            first = await first_chunk(stream, attempt.route)
    ex.served_by(attempt.route)
    return attempt.route, first, stream, native


async def count_tokens(ex: Exchange, request: m.CountTokensRequest, http: HttpRequest) -> HttpResponseBase:
    """`{"input_tokens": N}`: the upstream's count on an Anthropic route, else the gateway's own.
    Counting is free: the request is admitted against the caller's request rate, with no tokens,
    and logs none."""
    translated = translate.to_chat(request)
    routes = await ex.resolve(request.model)
    await ex.admit((0, 0))
    prepare = Preparation(translated, native_request(http, routes), counting=True)
    async for attempt in ex.failover(routes, translated.chat, prepare):
        async with attempt:
            route, prepared = attempt.route, attempt.prepared
            if is_native(prepared):
                call = anthropic(attempt.provider).native_count_tokens(prepared)
                tokens = await with_timeout(call, route.first_byte_timeout, route.provider)
            else:
                tokens = translate.count_input_tokens(translated)
    ex.served_by(attempt.route)
    return ex.respond({"input_tokens": tokens})


def anthropic(provider: Provider) -> AnthropicProvider:
    assert isinstance(provider, AnthropicProvider)
    return provider
