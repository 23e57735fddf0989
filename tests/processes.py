"""The gateway as its own process, started as a deployment starts it, for tests that need one.

`GatewayProcess` runs uvicorn (one worker) or the production command, exactly as
the image runs it (`gunicorn -c gunicorn.conf.py`, the Dockerfile's CMD), on the
test database, optionally under an address-space cap (`prlimit --as`) and with
its output in a file, and stops it afterwards. It waits for `/healthz` before
handing over.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings
from django.db import connection

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
# The image's CMD (Dockerfile); tests/test_deploy_files.py checks that the two agree.
PRODUCTION_COMMAND = ["gunicorn", "-c", "gunicorn.conf.py"]


def database_url() -> str:
    """The test database as a DATABASE_URL, so a gateway process shares what the test wrote."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return (
        f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    )


class GatewayProcess:
    """One gateway server process (`uvicorn` or `gunicorn`), stopped on exit."""

    def __init__(
        self,
        server: str = "uvicorn",
        *,
        memory_cap_bytes: int | None = None,
        env: dict[str, str] | None = None,
        workers: int = 1,
        output: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "CACHE_KEY_PREFIX": settings.CACHES["default"].get("KEY_PREFIX", ""),
            "GATEWAY_REDIS_PREFIX": settings.GATEWAY_REDIS_PREFIX,
            "GATEWAY_DEBUG_HEADERS": "true",  # x-gateway-worker: which worker answered (see __enter__)
            **(env or {}),
        }
        # Every server its own metrics directory (gunicorn.conf.py makes one), never the test run's.
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if env and env.get("PROMETHEUS_MULTIPROC_DIR"):
            self.env["PROMETHEUS_MULTIPROC_DIR"] = env["PROMETHEUS_MULTIPROC_DIR"]
        if server == "uvicorn":
            command = [sys.executable, "-m", "uvicorn", "compat_api.asgi:application", "--port", str(self.port)]
            command += ["--host", "127.0.0.1", "--log-level", "warning", "--no-access-log"]
        else:
            self.env |= {"GUNICORN_BIND": f"127.0.0.1:{self.port}", "WORKERS": str(workers)}
            command = [sys.executable, "-m", *PRODUCTION_COMMAND]
        if memory_cap_bytes is not None:
            command = ["prlimit", f"--as={memory_cap_bytes}", "--", *command]
        self.command = command
        self.workers = workers if server != "uvicorn" else 1
        self.output = output  # the server's stdout and stderr go to this file, for tests to read
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> GatewayProcess:
        out = open(self.output, "ab") if self.output is not None else None
        try:
            self.proc = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=out, stderr=out)
        finally:
            if out is not None:
                out.close()
        # Ready when every worker answers: a worker still loading the app takes no connection, and
        # would compete for the CPU with the test's first requests.
        deadline = time.monotonic() + 40
        answered: set[str] = set()
        while True:
            try:
                r = httpx.get(self.url + "/healthz", timeout=1)  # a new connection each time
                r.raise_for_status()
                answered.add(r.headers.get("x-gateway-worker", ""))
                if len(answered) >= self.workers or "" in answered:
                    return self
                time.sleep(0.05)
            except httpx.HTTPError as exc:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.proc.kill()
                    raise RuntimeError(f"the gateway did not start: {' '.join(self.command)}") from exc
                time.sleep(0.2)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __exit__(self, *exc: Any) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
