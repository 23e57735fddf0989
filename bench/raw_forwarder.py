"""The floor for a Python gateway: a raw ASGI app relaying each request to an upstream, nothing else.

uvicorn (uvloop, httptools) and one pooled aiohttp session per worker; the first path
segment picks the upstream (`FORWARD_<SEGMENT>=http://host:port`), the rest is sent as is.
Run as the bench does: `uvicorn bench.raw_forwarder:app --workers 2 --loop uvloop --http httptools`.
"""

import os
from typing import Any

import aiohttp

UPSTREAMS = {k[8:].lower(): v for k, v in os.environ.items() if k.startswith("FORWARD_")}
_session: aiohttp.ClientSession | None = None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _session
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        if _session is not None:
            await _session.close()
        await send({"type": "lifespan.shutdown.complete"})
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if _session is None:
        connector = aiohttp.TCPConnector(limit=2000, ttl_dns_cache=None)
        _session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
    upstream = UPSTREAMS[scope["path"].split("/", 2)[1]]
    headers = {"content-type": "application/json"}
    async with _session.post(upstream + scope["path"], data=body, headers=headers) as response:
        start = [(b"content-type", response.headers.get("content-type", "").encode())]
        if response.content_length is not None:
            start.append((b"content-length", str(response.content_length).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": start})
        async for chunk in response.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
