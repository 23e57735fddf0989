"""ASGI entry point: the gateway endpoints on the lean handler, the admin and API on Django's stock one."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
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
# Everything loaded so far (Django, the URL patterns, pydantic's schemas, the SDKs) lives as long as
# the process: out of the collector's sight, a full collection no longer walks it (55 ms with the
# event loop stopped, in the c64 profile of docs/benchmarks.md).
gc.freeze()


async def requests_closed(seconds: float = 3.0) -> None:
    """Wait (at most `seconds`) until every request has closed its exchange: requests the server
    cancelled at the end of its grace period finish their cleanup, which queues their log rows."""
    deadline = time.monotonic() + seconds
    while current().inflight > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def lifespan(receive: Any, send: Any) -> None:
    """Startup starts the request-log threads (which replay what stopped processes left in the spool);
    shutdown writes the pending request log (or leaves it in the spool) and closes upstream pools.

    The server runs shutdown after it stopped accepting and its in-flight requests ended (or were
    cancelled at the end of the grace period, compat_api/worker.py): every request's row is
    queued by then."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            current().log.start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            try:
                await requests_closed()
                if current().inflight:
                    logger.error("shutting down with %d requests still open", current().inflight)
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
