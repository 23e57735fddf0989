"""Serving the Responses API: one request through the chat steps, stored responses.

`create` translates the request (with the stored history it continues), runs
the chat steps (routing and limits, failover, the answer or the relayed stream,
one log row with endpoint "responses") and translates the answer back. With
`store` (the default) the response and its input items are saved for the
key's user before the client gets the answer's last byte.
"""

from __future__ import annotations

import logging
from typing import Any

from django.http import HttpResponseBase

from .. import chat
from ..exchange import Exchange
from ..relay import Relay
from . import store
from .protocol import CreateResponseRequest
from .stream import ResponsesSSE
from .translate import WARNING_HEADER, Bridge

logger = logging.getLogger(__name__)


async def create(ex: Exchange, request: CreateResponseRequest) -> HttpResponseBase:
    """A whole `Response` or, for `stream: true`, the Responses event stream."""
    assert ex.caller is not None
    history: list[dict[str, Any]] = []
    if request.previous_response_id:
        previous = await store.load(ex.caller.user_id, request.previous_response_id, param="previous_response_id")
        history = previous.context
    referenced = await store.find_items(ex.caller.user_id, request.references)
    bridge = Bridge(request, history, referenced)
    chat_request = bridge.chat_request
    with bridge.client_params():
        routes = await chat.admit(ex, chat_request)
        if request.stream:
            route, first, upstream = await chat.open_stream(ex, chat_request, routes)
        else:
            answer = await chat.complete(ex, chat_request, routes)
    if request.stream:
        dialect = ResponsesSSE(bridge, ex.record)
        relay = Relay(ex, chat_request, route, first, upstream, dialect=dialect)
        return _warned(ex.respond_stream(StoringStream(ex, bridge, relay, dialect)), bridge)
    response = bridge.response(answer)
    if request.stores:
        await store.save(ex.caller.user_id, ex.caller.key_id, response, bridge.stored_input())
    return _warned(ex.respond(response), bridge)


def _warned(response: HttpResponseBase, bridge: Bridge) -> HttpResponseBase:
    if bridge.warnings:
        response[WARNING_HEADER] = "; ".join(bridge.warnings)
    return response


class StoringStream:
    """The relayed event stream; once the final event is ready, the response is stored, then sent."""

    def __init__(self, ex: Exchange, bridge: Bridge, relay: Relay, dialect: ResponsesSSE) -> None:
        self.ex, self.bridge, self.relay, self.dialect = ex, bridge, relay, dialect
        self.saved = not bridge.request.stores
        self._events = self._run()

    def __aiter__(self) -> StoringStream:
        return self

    async def __anext__(self) -> bytes:
        return await self._events.__anext__()

    async def _run(self) -> Any:
        async for part in self.relay:
            if self.dialect.final is not None and not self.saved:
                self.saved = True
                await self._save(self.dialect.final)
            yield part

    async def _save(self, response: dict[str, Any]) -> None:
        """Store the finished response; the answer reaches the client even if that fails (logged)."""
        caller = self.ex.caller
        assert caller is not None
        try:
            await store.save(caller.user_id, caller.key_id, response, self.bridge.stored_input())
        except Exception:
            logger.exception("storing streamed response %s failed", response.get("id"))

    async def aclose(self) -> None:
        await self._events.aclose()
        await self.relay.aclose()
