"""Shared fixtures: the real gateway on uvicorn, official SDK clients, keys, schema checks.

The gateway runs in a thread of the test process on a real uvicorn server (so
tests can flush its request log and see its caches); tests that need several
worker processes start gunicorn themselves. Every test that talks to the
server uses a transactional database, so the server's own connections see
what the test wrote.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.conf import settings

# Fresh cache namespace per run: a shared Redis must not carry state between runs.
RUN_PREFIX = f"gwtest-{uuid.uuid4().hex[:8]}"


# A spool directory of this run's own, shared with the gateway processes it starts.
SPOOL_DIR = tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-spool-")


def pytest_configure(config: pytest.Config) -> None:
    settings.CACHES["default"]["KEY_PREFIX"] = RUN_PREFIX
    settings.GATEWAY_REDIS_PREFIX = RUN_PREFIX
    settings.GATEWAY_LOG_SPOOL_DIR = SPOOL_DIR
    os.environ["CACHE_KEY_PREFIX"] = RUN_PREFIX
    os.environ["GATEWAY_REDIS_PREFIX"] = RUN_PREFIX
    os.environ["GATEWAY_LOG_SPOOL_DIR"] = SPOOL_DIR


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(SPOOL_DIR, ignore_errors=True)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under CI, the suite must run against the real PostgreSQL and Redis, or not at all."""
    if os.environ.get("GATEWAY_REQUIRE_SERVICES") != "1":
        return
    engine = settings.DATABASES["default"]["ENGINE"]
    if "postgresql" not in engine:
        pytest.exit(f"GATEWAY_REQUIRE_SERVICES=1 but the database engine is {engine}", returncode=3)
    if not settings.REDIS_URL:
        pytest.exit("GATEWAY_REQUIRE_SERVICES=1 but REDIS_URL is not set", returncode=3)
    import redis

    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:
        pytest.exit(f"Redis at {settings.REDIS_URL} is unreachable: {exc}", returncode=3)


def node_tool(name: str) -> str:
    """The path of `node` or `npm`. Without them, the tests that drive Node programs (client
    libraries, Codex CLI, Claude Code) skip on a developer's machine, where the README's two
    commands need only Python, and fail under CI (.ci/run sets GATEWAY_REQUIRE_NODE=1)."""
    import shutil

    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("GATEWAY_REQUIRE_NODE") == "1":
        pytest.fail(f"{name} is required here (GATEWAY_REQUIRE_NODE=1) but is not installed")
    pytest.skip(f"{name} is not installed: the Node client and CLI tests need Node 20 and npm")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerThread:
    """uvicorn serving an ASGI app from a background thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        import uvicorn

        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the server runs in, once it listens."""
        servers = getattr(self.server, "servers", None)
        return servers[0].get_loop() if servers else None

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture(scope="session")
def server(django_db_setup: Any, django_db_blocker: Any) -> Iterator[ServerThread]:
    """The gateway's real ASGI application on uvicorn, for the whole session."""
    from compat_api.asgi import application

    srv = ServerThread(application).start()
    yield srv
    with django_db_blocker.unblock():
        srv.stop()
        from django.db import connections

        connections.close_all()


@pytest.fixture
def gateway(server: ServerThread, transactional_db: Any) -> Iterator[ServerThread]:
    """The server, with a clean database and fresh process state (routes, breakers, caches, log
    writer, limiter) for this test, and the request log written after it."""
    from completions.app import build, install

    state = install(build())
    yield server
    assert state.log.flush(20), "the request log writer did not catch up"
    state.log.close()
    # This test's upstream pools (the OpenAI-compatible routes' aiohttp sessions) belong to the
    # server's event loop: closed there, or each would be reported unclosed when collected.
    loop = server.loop
    if loop is not None and loop.is_running():
        asyncio.run_coroutine_threadsafe(state.aclose(), loop).result(10)


@pytest.fixture
def user(transactional_db: Any) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(
        username=f"user-{uuid.uuid4().hex[:6]}", password="pw-" + uuid.uuid4().hex
    )


@pytest.fixture
def api_key(user: Any) -> str:
    """A fresh API key (the secret) for `user`."""
    from completions.keys import create_api_key

    _, secret = create_api_key(user, "test key")
    return secret


@pytest.fixture
def client(gateway: ServerThread, api_key: str) -> Any:
    """The official sync `openai` client, pointed at the gateway's /v1."""
    import openai

    return openai.OpenAI(api_key=api_key, base_url=gateway.url + "/v1", max_retries=0, timeout=30)


@pytest.fixture
def async_client(gateway: ServerThread, api_key: str) -> Any:
    import openai

    return openai.AsyncOpenAI(api_key=api_key, base_url=gateway.url + "/v1", max_retries=0, timeout=30)


@pytest.fixture
def raw(gateway: ServerThread, api_key: str) -> Iterator[httpx.Client]:
    """Plain HTTP to the gateway, for inputs the SDK can't send."""
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30) as c:
        yield c


def log_rows(**filters: Any) -> list[Any]:
    """Request-log rows after the writer caught up."""
    from completions.app import current
    from completions.models import RequestLog

    assert current().log.flush(20)
    return list(RequestLog.objects.filter(**filters).order_by("id"))
