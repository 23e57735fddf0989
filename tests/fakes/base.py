"""A scriptable fake upstream: a real HTTP server (uvicorn in a thread) speaking a provider's protocol.

Each fake records every request it receives and answers from a script of
`Reply` objects (FIFO), falling back to its protocol's default answer. A
stream reply is a list of events; a `Gate` among them makes the server hold
the rest until the test opens it, and `DROP` cuts the connection there.

    fake = FakeGemini().start()
    gate = Gate()
    fake.script(Reply(events=[first, gate, second]))
    ... drive the gateway ...
    gate.open()
    fake.requests[-1].json   # what the provider SDK actually sent
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson


class Gate:
    """A point in a scripted stream where the server waits until the test calls `open()`."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def open(self) -> None:
        self._event.set()

    async def wait(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._event.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError("gate never opened")
            await asyncio.sleep(0.005)


DROP = object()  # in `events`: cut the connection here, mid-stream


@dataclass
class Pause:
    """In `events`: sleep this many seconds (a slow or stalled upstream)."""

    seconds: float


@dataclass
class Reply:
    """One scripted answer: a JSON body, or (with `events`) a server-sent-event stream."""

    status: int = 200
    json: Any = None
    events: list[Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering at all
    body: bytes | None = None  # raw body, instead of json
    sse_format: Callable[[Any], bytes] | None = None  # how one event is framed (default `data: <json>\n\n`)


@dataclass
class Recorded:
    """A request the fake received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)  # when it arrived

    @property
    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


def sse_data(event: Any) -> bytes:
    """`data: <json>` framing (OpenAI, Gemini)."""
    if isinstance(event, (bytes, bytearray)):
        return bytes(event)
    if isinstance(event, str):
        return f"data: {event}\n\n".encode()
    return b"data: " + orjson.dumps(event) + b"\n\n"


class FakeUpstream:
    """Base class: override `default_reply()` (and `route()` for path-dependent answers)."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.disconnects = 0  # streams the client abandoned before the end
        self._script: list[Reply] = []
        self._lock = threading.Lock()
        self._server: Any = None

    # ---- test-facing API ----
    def script(self, *replies: Reply) -> FakeUpstream:
        with self._lock:
            self._script.extend(replies)
        return self

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self.disconnects = 0

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> FakeUpstream:
        from tests.conftest import ServerThread

        async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await self.app(scope, receive, send)

        # A plain coroutine function: uvicorn would take the bound method for an ASGI2 app.
        self._server = ServerThread(asgi).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    # ---- protocol hooks ----
    def default_reply(self, request: Recorded) -> Reply:
        return Reply(status=404, json={"error": {"message": f"no scripted reply for {request.path}"}})

    def next_reply(self, request: Recorded) -> Reply:
        with self._lock:
            if self._script:
                return self._script.pop(0)
        return self.default_reply(request)

    # ---- ASGI ----
    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        recorded = Recorded(
            method=scope["method"],
            path=scope["path"],
            query=parse_qs(scope.get("query_string", b"").decode()),
            headers={k.decode().lower(): v.decode() for k, v in scope["headers"]},
            body=body,
        )
        with self._lock:
            self.requests.append(recorded)
        reply = self.next_reply(recorded)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.events is None:
            payload = reply.body if reply.body is not None else orjson.dumps(reply.json)
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
            headers += [(k.encode(), v.encode()) for k, v in reply.headers.items()]
            await send({"type": "http.response.start", "status": reply.status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
            return
        await self._stream(reply, send, receive)

    async def _stream(self, reply: Reply, send: Any, receive: Any) -> None:
        frame = reply.sse_format or sse_data
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        headers += [(k.encode(), v.encode()) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        gone = asyncio.Event()

        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        listener = asyncio.create_task(listen())
        try:
            for event in reply.events or []:
                if isinstance(event, Gate):
                    while not event._event.is_set() and not gone.is_set():
                        await asyncio.sleep(0.005)
                elif isinstance(event, Pause):
                    try:
                        await asyncio.wait_for(gone.wait(), event.seconds)
                    except TimeoutError:
                        pass
                elif event is DROP:
                    raise ConnectionAbortedError("scripted drop")
                if gone.is_set():
                    with self._lock:
                        self.disconnects += 1
                    return
                if not isinstance(event, (Gate, Pause)):
                    await send({"type": "http.response.body", "body": frame(event), "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            listener.cancel()
