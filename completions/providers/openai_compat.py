"""OpenAI-compatible upstreams: OpenAI itself, vLLM, Ollama, llama.cpp server, Groq, Together, ...

The request goes upstream as the client sent it, with `model` rewritten; the
answer comes back already in OpenAI's shape and is relayed as it came, with
the fields OpenAI's schemas require but allow to be null filled in when the
upstream left them out (LiteLLM's proxy drops every null: `logprobs`,
`message.content` and `refusal`, a chunk's `finish_reason`). The pure
part (request bodies, SSE decoding, usage handling, error mapping) is plain
functions and two small classes (an SSE decoder and the stream translator);
`OpenAICompatProvider` does the I/O over one pooled `aiohttp.ClientSession` per
route (and event loop). aiohttp rather than httpx because its pool stays cheap
under concurrency: httpcore's pool bookkeeping walked every pooled connection on
each request, 57% of the event loop at 64 concurrent requests (docs/benchmarks.md).
The other providers' SDKs stay on httpx.

Route options: `headers` (extra request headers), `auth_header` (send the raw
key in this header instead of `Authorization: Bearer`, e.g. Azure's
`api-key`), `force_stream_usage` (default true: ask for
`stream_options.include_usage` upstream so the log gets real counts; turn it
off for a server that rejects `stream_options`), `max_connections`.
"""

from __future__ import annotations

import asyncio
import html
import os
import re
import ssl
from collections.abc import AsyncIterator, Iterable
from functools import cache
from typing import Any

import aiohttp
import orjson
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from .. import protocol as p
from ..errors import (
    GatewayError,
    UpstreamError,
    from_upstream_status,
    relayed_upstream_error,
    upstream_failure,
    upstream_timeout,
    upstream_unreachable,
)
from .base import Prepared, Provider, Route, upstream_failures

PROVIDER = "openai"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
SLACK_SECONDS = 5.0  # the client's own read timeout sits behind the gateway's first-byte/idle timeouts
DONE = b"[DONE]"
DRAIN_SECONDS = 1.0  # how long to wait for the end of the body after [DONE] (so the connection is reused)

# ---- request bodies ---------------------------------------------------------------------


def chat_body(
    request: p.ChatCompletionRequest, upstream_model: str, *, stream: bool, force_usage: bool = True
) -> dict[str, Any]:
    """The upstream body: the client's JSON as sent, `model` rewritten; streams ask for usage."""
    body = request.model_dump(exclude_unset=True, by_alias=True, mode="json")
    body["model"] = upstream_model
    if stream:
        body["stream"] = True
        if force_usage:
            options = body.get("stream_options") or {}
            options["include_usage"] = True
            body["stream_options"] = options
    return body


def embedding_body(request: p.EmbeddingRequest, upstream_model: str) -> dict[str, Any]:
    """Always float vectors upstream: the gateway encodes base64 itself when the client asked."""
    body = request.model_dump(exclude_unset=True, by_alias=True, mode="json")
    body["model"] = upstream_model
    body["encoding_format"] = "float"
    return body


# ---- normalising what is relayed ----------------------------------------------------------


def normalise_completion(payload: dict[str, Any]) -> dict[str, Any]:
    """A completion with the required nullable fields present (null when the upstream left them out);
    everything the upstream sent is kept."""
    for choice in payload.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        choice.setdefault("logprobs", None)
        message = choice.get("message")
        if isinstance(message, dict):
            message.setdefault("content", None)
            message.setdefault("refusal", None)
    return payload


def normalise_chunk(chunk: dict[str, Any]) -> dict[str, Any]:
    """A stream chunk with each choice's `delta` and `finish_reason` present (null while the choice runs)."""
    for choice in chunk["choices"]:
        if isinstance(choice, dict):
            choice.setdefault("delta", {})
            choice.setdefault("finish_reason", None)
    return chunk


# ---- usage ------------------------------------------------------------------------------


def usage_only(chunk: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    """The final usage chunk of a stream whose usage came on a content chunk."""
    return {
        "id": chunk.get("id", ""),
        "object": "chat.completion.chunk",
        "created": chunk.get("created", 0),
        "model": chunk.get("model", ""),
        "choices": [],
        "usage": usage,
    }


# ---- errors -------------------------------------------------------------------------------

_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def _json(content: bytes) -> Any:
    if not content or content.lstrip()[:1] not in (b"{", b"["):
        return None
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


def openai_error_fields(payload: Any) -> dict[str, Any] | None:
    """The error object of an OpenAI-form error body (or vLLM's older flat form), else None."""
    if not isinstance(payload, dict):
        return None
    err = payload.get("error")
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return err
    if payload.get("object") == "error" and isinstance(payload.get("message"), str):
        return payload
    return None


def short_text(content: bytes, fallback: str, payload: Any = None, limit: int = 200) -> str:
    """A one-line explanation from a non-OpenAI error body: JSON message, HTML title, or text."""
    text = ""
    if isinstance(payload, dict):
        for key in ("error", "message", "detail", "msg"):
            value = payload.get(key)
            if isinstance(value, dict):
                value = value.get("message")
            if isinstance(value, str) and value:
                text = value
                break
    if not text:
        text = content.decode("utf-8", "replace")
        if "<" in text and ">" in text:
            title = _TITLE.search(text)
            text = html.unescape(_TAG.sub(" ", title.group(1) if title else text))
    text = _SPACE.sub(" ", text).strip()
    if len(text) > limit:
        text = text[:limit].rstrip() + "..."
    return text or fallback


def passthrough_error(err: dict[str, Any], status: int, retry_after: str | None = None) -> GatewayError:
    """An upstream OpenAI-form error with its own status, message, type, param and code (never a 401's)."""
    etype, param, code = err.get("type"), err.get("param"), err.get("code")
    return relayed_upstream_error(
        status,
        err["message"],
        provider=PROVIDER,
        type=etype if isinstance(etype, str) and etype else None,
        param=param if isinstance(param, str) else None,
        code=code if isinstance(code, str) else None,  # vLLM and llama.cpp put the HTTP status here
        retry_after=retry_after,
    )


def error_from_response(
    status: int, content: bytes, *, reason: str = "", retry_after: str | None = None
) -> GatewayError:
    """The gateway error for an upstream HTTP error answer."""
    if status == 401:
        return from_upstream_status(401, "", provider=PROVIDER)
    payload = _json(content)
    err = openai_error_fields(payload)
    if err is not None:
        return passthrough_error(err, status, retry_after)
    text = short_text(content, reason or f"HTTP {status}", payload)
    return from_upstream_status(status, text, provider=PROVIDER, retry_after=retry_after)


def error_from_event(payload: Any) -> GatewayError:
    """The gateway error for an error sent inside a 200 answer (a stream event or a JSON body)."""
    err = openai_error_fields(payload)
    if err is None:
        inner = payload.get("error") if isinstance(payload, dict) else None
        source = payload if isinstance(payload, dict) and isinstance(payload.get("message"), str) else None
        message = inner if isinstance(inner, str) else (source or {}).get("message") or "unknown error"
        err = {**(source or {}), "message": message}
    code = err.get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else 502
    return passthrough_error(err, status)


def upstream_error(exc: Exception) -> GatewayError | None:
    """The one mapping of upstream failures raised by aiohttp: unreachable, timed out, or cut off.

    (Error answers are not exceptions here: `error_from_response` maps them by status.)
    """
    if not isinstance(exc, aiohttp.ClientError):
        return None  # a bare TimeoutError is the gateway's own deadline, mapped by its owner
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # connecting, or waiting for a pooled connection
        return upstream_unreachable(PROVIDER, "the connection timed out")
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, DNS, TLS handshake, proxy
        return upstream_unreachable(PROVIDER, detail)
    if isinstance(exc, aiohttp.ServerTimeoutError):  # no data within the read timeout (SocketTimeoutError)
        return upstream_timeout(PROVIDER, f"{type(exc).__name__}")
    if isinstance(
        exc,
        (
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientPayloadError,
            aiohttp.ClientOSError,
            aiohttp.ClientConnectionResetError,
        ),
    ):
        return upstream_failure(
            f"The {PROVIDER} upstream closed the connection before the answer ended: {detail}",
            code="upstream_connection_lost",
            headers={"retry-after": "1"},
        )
    return upstream_failure(f"The {PROVIDER} upstream request failed: {type(exc).__name__}: {detail}")


# ---- server-sent events ------------------------------------------------------------------------


class SSEDecoder:
    """Incremental server-sent-event parser: bytes as they arrive in, `(event, data)` pairs out.

    Handles events split across reads, `\\n`, `\\r\\n` and `\\r` line ends,
    `:` comments, `event:` names and multi-line data; also llama.cpp's old
    non-standard `error:` field, reported as an `error` event.
    """

    __slots__ = ("_after_cr", "_buffer", "_data", "_event")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        self._event = b""
        self._after_cr = False

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]  # the second half of a \r\n split across reads
        if not chunk:
            return []
        self._after_cr = chunk[-1:] == b"\r"
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, self._buffer = buffer.split(b"\n")
        return self._lines(lines)

    def flush(self) -> list[tuple[bytes, bytes]]:
        """Whatever is pending when the stream ends (a last event without its blank line)."""
        lines = [self._buffer, b""] if self._buffer else [b""]
        self._buffer = b""
        return self._lines(lines)

    def _lines(self, lines: Iterable[bytes]) -> list[tuple[bytes, bytes]]:
        events: list[tuple[bytes, bytes]] = []
        for line in lines:
            if not line:
                if self._data:
                    data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                    if data:
                        events.append((self._event, data))
                    self._data = []
                self._event = b""
                continue
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value)
            elif name == b"event":
                self._event = value
            elif name == b"error":
                self._event = b"error"
                self._data.append(value)
        return events


class StreamTranslator:
    """SSE bytes in, OpenAI chunks out (`base.StreamTranslator`): stops at `[DONE]`, raises on
    error events, and keeps the upstream's usage for one final usage-only chunk."""

    __slots__ = ("_sse", "done", "error", "usage_chunk")

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self.done = False
        self.error: GatewayError | None = None  # raised by `finish()`, after the chunks that preceded it
        self.usage_chunk: dict[str, Any] | None = None

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        return self._chunks(self._sse.feed(data))

    def finish(self) -> list[dict[str, Any]]:
        """The chunks still pending when the upstream ended, then the usage chunk if any."""
        out = [] if self.done else self._chunks(self._sse.flush())
        if self.error is not None:
            raise self.error
        if self.usage_chunk is not None:
            out.append(self.usage_chunk)
            self.usage_chunk = None
        return out

    def _chunks(self, events: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for event, data in events:
            if data == DONE:
                self.done = True
                break
            try:
                chunk = self._parse(event, data)
            except GatewayError as exc:
                if not out:
                    raise
                self.error, self.done = exc, True
                break
            if chunk is None:
                continue
            usage = chunk.get("usage")
            if usage is not None:
                if not chunk["choices"]:
                    self.usage_chunk = chunk
                    continue
                del chunk["usage"]
                self.usage_chunk = usage_only(chunk, usage)
            out.append(chunk)
        return out

    def _parse(self, event: bytes, data: bytes) -> dict[str, Any] | None:
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            text = data[:200].decode("utf-8", "replace")
            raise upstream_failure(f"The {PROVIDER} upstream sent a malformed stream event: {text}") from None
        if not isinstance(payload, dict):
            return None
        if event == b"error" or payload.get("error") or payload.get("object") == "error":
            raise error_from_event(payload)
        if not isinstance(payload.get("choices"), list):
            return None  # a keepalive or an unknown event: nothing for the client
        return normalise_chunk(payload)


def completion_to_chunks(response: dict[str, Any]) -> list[dict[str, Any]]:
    """A whole completion as stream chunks, for a server that answered a stream request with JSON."""
    factory = p.ChunkFactory(response.get("model", ""), response.get("id"), response.get("created"))
    chunks = []
    for choice in response.get("choices") or ():
        message = dict(choice.get("message") or {})
        message.setdefault("role", "assistant")
        if message.get("tool_calls"):
            message["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        index = choice.get("index", 0)
        chunks.append(factory.delta(index, message, logprobs=choice.get("logprobs")))
        chunks.append(factory.delta(index, {}, finish_reason=choice.get("finish_reason") or "stop"))
    if response.get("usage"):
        chunks.append(factory.usage(response["usage"]))
    return chunks


# ---- I/O ------------------------------------------------------------------------------------


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read what follows `[DONE]` (normally just the end of the body): a connection whose body
    was not read to its end is closed instead of returned to the pool."""
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while await response.content.readany():
                pass
    except (TimeoutError, aiohttp.ClientError):
        pass


@cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every route (building one loads the CA bundle): the one httpx built,
    SSL_CERT_FILE or SSL_CERT_DIR when set, else certifi's bundle."""
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with httpx
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def env_proxy(url: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for `url` (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), read once per route."""
    try:
        return get_env_proxy_for_url(URL(url))
    except (LookupError, ValueError):  # no proxy for it (a malformed URL fails on the request, as a 502)
        return None, None


class OpenAICompatProvider(Provider):
    """Any server speaking OpenAI's chat completions and embeddings API."""

    name = PROVIDER
    supported_params = frozenset(p.ChatCompletionRequest.model_fields)  # the upstream decides

    def __init__(self, route: Route) -> None:
        super().__init__(route)
        base = (route.base_url or DEFAULT_BASE_URL).rstrip("/")
        self.base_url = base
        self._chat_url = base + "/chat/completions"
        self._embeddings_url = base + "/embeddings"
        options = route.options
        self._force_usage = bool(options.get("force_stream_usage", True))
        self._auth_header = str(options.get("auth_header") or "authorization").lower()
        self._static_headers = {
            "content-type": "application/json",
            **{str(k): str(v) for k, v in (options.get("headers") or {}).items()},
        }
        self._client: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the event loop `_client` belongs to
        self._proxy, self._proxy_auth = env_proxy(base)
        self._key: str | None = None
        self._auth: dict[str, str] | None = None

    # ---- plumbing ----
    def _open(self) -> aiohttp.ClientSession:
        """A new pooled session for the route, in the running event loop."""
        route = self.route
        read = max(route.first_byte_timeout, route.idle_timeout) + SLACK_SECONDS
        max_connections = int(route.options.get("max_connections", 1000))
        connector = aiohttp.TCPConnector(
            limit=max_connections,
            limit_per_host=0,
            keepalive_timeout=30,
            ttl_dns_cache=60,
            ssl=tls_context() if self.base_url.startswith("https:") else True,
        )
        self._client = aiohttp.ClientSession(
            connector=connector,
            # `connect` bounds waiting for a pooled connection plus connecting; `sock_read` each read
            # (the answer's head included); no total: the gateway's first-byte and idle timeouts rule.
            timeout=aiohttp.ClientTimeout(total=None, connect=read, sock_connect=route.connect_timeout, sock_read=read),
            headers=self._static_headers,
            cookie_jar=aiohttp.DummyCookieJar(),  # one upstream's cookies must never reach another caller's request
            raise_for_status=False,
        )
        self._loop = asyncio.get_running_loop()
        return self._client

    def _session(self) -> aiohttp.ClientSession:
        """The route's pooled session, created on first use in this event loop."""
        client = self._client
        if client is None or client.closed or self._loop is not asyncio.get_running_loop():
            return self._open()  # (a session belongs to one loop: a new loop, as in tests, gets its own)
        return client

    def _credential_headers(self) -> dict[str, str] | None:
        """The auth header, read from the environment at call time (and cached while it is unchanged)."""
        if not self.route.api_key_env:
            return None  # local servers (Ollama, llama.cpp) need no key
        key = self.route.require_credential()
        if key != self._key:
            value = f"Bearer {key}" if self._auth_header == "authorization" else key
            self._key, self._auth = key, {self._auth_header: value}
        return self._auth

    async def _post(self, url: str, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """Send `body`; any failure, including an error status, is raised as a GatewayError.

        The answer's body is not read yet: the caller reads it (or streams it) and releases it.
        """
        headers = self._credential_headers()
        client = self._session()
        with upstream_failures(upstream_error):
            response = await client.post(
                url,
                data=orjson.dumps(body),
                headers=headers,
                proxy=self._proxy,
                proxy_auth=self._proxy_auth,
                allow_redirects=False,  # a redirect is an error answer, never followed with the credential
            )
        if 200 <= response.status < 300:
            return response
        try:
            content = await response.read()
        except (aiohttp.ClientError, TimeoutError):
            content = b""
        finally:
            response.release()
        raise error_from_response(
            response.status,
            content,
            reason=response.reason or "",
            retry_after=response.headers.get("retry-after"),
        )

    @staticmethod
    async def _read(response: aiohttp.ClientResponse) -> bytes:
        """The whole body; the connection goes back to the pool."""
        try:
            with upstream_failures(upstream_error):
                return await response.read()
        finally:
            response.release()

    def _json_body(self, content: bytes) -> dict[str, Any]:
        """A 200 answer's JSON object; an error inside it is raised."""
        payload = _json(content)
        if not isinstance(payload, dict):
            text = short_text(content, "empty body")
            raise upstream_failure(f"The {PROVIDER} upstream answered with a body that is not a JSON object: {text}")
        if payload.get("error") or payload.get("object") == "error":
            raise error_from_event(payload)
        return payload

    # ---- the provider interface ----
    def translate(self, request: p.ChatCompletionRequest) -> dict[str, Any]:
        """The upstream body, for the mode the request asks for (`stream`)."""
        return chat_body(request, self.route.upstream_model, stream=bool(request.stream), force_usage=self._force_usage)

    async def complete(self, prepared: Prepared[dict[str, Any]]) -> dict[str, Any]:
        response = await self._post(self._chat_url, prepared.payload)
        payload = self._json_body(await self._read(response))
        if not isinstance(payload.get("choices"), list):
            raise UpstreamError(f"The {PROVIDER} upstream answered without `choices`.")
        return normalise_completion(payload)

    async def stream(self, prepared: Prepared[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        response = await self._post(self._chat_url, prepared.payload)
        finished = False
        try:
            if "application/json" in response.headers.get("content-type", ""):
                chunks = completion_to_chunks(self._json_body(await self._read(response)))
            else:
                reader = StreamTranslator()
                content = response.content
                with upstream_failures(upstream_error):
                    while data := await content.readany():
                        for chunk in reader.feed(data):
                            yield chunk
                        if reader.done:
                            if reader.error is None:
                                await _drain(response)
                            break
                chunks = reader.finish()
            finished = True
            for chunk in chunks:
                yield chunk
        finally:
            if finished and response.content.at_eof():
                response.release()  # read to its end: the connection goes back to the pool
            else:
                response.close()  # the consumer stopped early (or it failed): hang up, so the upstream stops

    async def embed(self, request: p.EmbeddingRequest) -> dict[str, Any]:
        response = await self._post(self._embeddings_url, embedding_body(request, self.route.upstream_model))
        payload = self._json_body(await self._read(response))
        if not isinstance(payload.get("data"), list):
            raise UpstreamError(f"The {PROVIDER} upstream answered without `data`.")
        return payload

    async def aclose(self) -> None:
        """Close the pool, in the event loop it belongs to (one of a loop that is gone went with its loop)."""
        client, self._client = self._client, None
        if client is not None and not client.closed and self._loop is asyncio.get_running_loop():
            await client.close()
