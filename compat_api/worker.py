"""The gunicorn worker class of deployments: uvicorn's, fitted to a graceful shutdown that keeps every row.

On SIGTERM gunicorn gives each worker `graceful_timeout` seconds before it kills it.
uvicorn's own worker waits for open connections without a bound, so a stream longer
than the grace period would be killed with its log row still in memory. This worker
lets in-flight requests run for the grace period less `GATEWAY_SHUTDOWN_RESERVE_SECONDS`
(5 s), then cancels what is left (each such request is logged as cut short) and spends
the reserve writing the pending request log (the ASGI lifespan shutdown, compat_api/asgi.py).

uvicorn's access log is off unless GUNICORN_ACCESS_LOG is set: the gateway writes its
own JSON line per request (completions/logs.py).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from uvicorn_worker import UvicornWorker


def shutdown_reserve() -> float:
    return float(os.environ.get("GATEWAY_SHUTDOWN_RESERVE_SECONDS", "5"))


class GatewayWorker(UvicornWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        grace = float(self.cfg.graceful_timeout)
        reserve = min(shutdown_reserve(), grace / 2)
        self.config.timeout_graceful_shutdown = max(1, int(grace - reserve))
        if not self.cfg.accesslog:
            # uvicorn logs access lines whenever its logger has a handler (the worker gives it gunicorn's).
            logging.getLogger("uvicorn.access").handlers = []
        self.config.server_header = False  # no server banner to fingerprint
