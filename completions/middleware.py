"""Async middleware shared by both handlers: the request id."""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.utils.decorators import async_only_middleware

from .protocol import random_id

_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def new_request_id() -> str:
    return random_id("req_", 28)


def request_id_from(value: str | None) -> str:
    """The client's own id when it is sane, else a new one."""
    if value and _SANE_ID.match(value):
        return value
    return new_request_id()


@async_only_middleware
def request_id_middleware(
    get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]],
) -> Callable[[HttpRequest], Awaitable[HttpResponseBase]]:
    """Give every request an id (`request.request_id`) and echo it as `x-request-id`."""

    async def middleware(request: HttpRequest) -> HttpResponseBase:
        request_id = request_id_from(request.META.get("HTTP_X_REQUEST_ID"))
        request.request_id = request_id
        response = await get_response(request)
        response["x-request-id"] = request_id
        if settings.GATEWAY_DEBUG_HEADERS:
            response["x-gateway-worker"] = str(os.getpid())
        return response

    return middleware
