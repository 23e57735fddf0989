"""HTTP glue for the Responses API: each view authenticates (or opens an exchange) and calls one step.

Errors are not caught here: the gateway handler's error boundary renders them in OpenAI's envelope.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponseBase

from ..app import current
from ..auth import authenticate
from ..errors import InvalidRequest
from ..exchange import Exchange, json_response
from ..views import api_view
from . import service, store
from .protocol import CreateResponseRequest


@api_view("POST")
async def create_response(request: HttpRequest) -> HttpResponseBase:
    """POST /v1/responses."""
    async with Exchange.open(request, "responses") as ex:
        return await service.create(ex, await ex.accept(request, CreateResponseRequest))


@api_view("GET", "DELETE")
async def response_detail(request: HttpRequest, response_id: str) -> HttpResponseBase:
    """GET /v1/responses/{id} (the stored response); DELETE removes it."""
    caller = await authenticate(request, current().keys)
    if request.method == "DELETE":
        await store.delete(caller.user_id, response_id)
        return json_response({"id": response_id, "object": "response", "deleted": True})
    if request.GET.get("stream", "false").lower() not in ("false", "0", ""):
        raise InvalidRequest(
            "Replaying a stored response as a stream is not supported.", param="stream", code="unsupported_parameter"
        )
    return json_response((await store.load(caller.user_id, response_id)).response)


@api_view("GET")
async def response_input_items(request: HttpRequest, response_id: str) -> HttpResponseBase:
    """GET /v1/responses/{id}/input_items?limit=&order=&after=."""
    caller = await authenticate(request, current().keys)
    limit_text = request.GET.get("limit") or "20"
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
        raise InvalidRequest("`limit` must be an integer from 1 to 100.", param="limit")
    order = request.GET.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise InvalidRequest("`order` must be `asc` or `desc`.", param="order")
    stored = await store.load(caller.user_id, response_id)
    after = request.GET.get("after") or None
    return json_response(store.page(stored.input_items, limit=int(limit_text), order=order, after=after))
