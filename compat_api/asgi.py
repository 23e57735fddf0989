"""ASGI entry point: the gateway endpoints on the lean handler, the admin and API on Django's stock one."""

from __future__ import annotations

import logging
import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "compat_api.settings")
django.setup(set_prefix=False)

from asgiref.sync import sync_to_async  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.db import connections  # noqa: E402

from completions.app import build, current, install  # noqa: E402
from completions.db import run_db  # noqa: E402
from completions.handler import GatewayASGIHandler  # noqa: E402

logger = logging.getLogger(__name__)

# Paths served by Django's stock handler (sync views that need its per-request context).
STOCK_PREFIXES = ("/admin", "/api/", "/static/")

stock_app = ASGIHandler()
gateway_app = GatewayASGIHandler()
install(build())  # this process's state: routes, breakers, log writer, limiter, key cache


async def lifespan(receive: Any, send: Any) -> None:
    """Startup starts the request-log threads (which replay what stopped processes left in the spool);
    shutdown writes the pending request log (or leaves it in the spool) and closes upstream pools."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            current().log.start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            try:
                await current().aclose()
                await sync_to_async(current().log.close, thread_sensitive=False)(30.0)
                await run_db(connections.close_all)
            except Exception:
                logger.exception("shutdown cleanup failed")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "http":
        if scope["path"].startswith(STOCK_PREFIXES):
            await stock_app(scope, receive, send)
        else:
            await gateway_app(scope, receive, send)
    elif kind == "lifespan":
        await lifespan(receive, send)
    else:
        await send({"type": "websocket.close", "code": 1003})
