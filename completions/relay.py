"""Relaying one chat completion stream to the client as server-sent events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Protocol

import orjson

from .errors import GatewayError, InternalError, UpstreamError, upstream_timeout
from .exchange import Exchange
from .protocol import ChatCompletionRequest, ChunkFactory, usage
from .providers import Route
from .tokens import count_prompt, count_tokens

logger = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"

Chunks = AsyncIterator[dict[str, Any]]


def sse(payload: dict[str, Any]) -> bytes:
    """One server-sent event carrying `payload` as JSON."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def first_chunk(stream: Chunks, route: Route) -> dict[str, Any]:
    """The upstream's first chunk within the route's first-byte timeout; the stream is closed on failure."""
    try:
        async with asyncio.timeout(route.first_byte_timeout):
            return await anext(stream)
    except TimeoutError:
        await close_quietly(stream)
        raise upstream_timeout(route.provider, f"no data within {route.first_byte_timeout:g} s") from None
    except StopAsyncIteration:
        raise UpstreamError(f"The {route.provider} upstream ended the stream without data.") from None
    except BaseException:
        await close_quietly(stream)
        raise


async def close_quietly(stream: Chunks) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # the upstream is gone either way
            logger.debug("closing an upstream stream failed", exc_info=True)


class StreamDialect(Protocol):
    """How a stream of upstream chat chunks is encoded for the client (Chat Completions SSE here;
    other inbound APIs bring their own). The relay does the rest: timeouts, usage, the log."""

    def chunk(self, chunk: dict[str, Any]) -> bytes | None:
        """The bytes for one upstream chunk (None to send nothing)."""
        ...

    def end(self, prompt_tokens: int, completion_tokens: int, counted_here: bool) -> bytes:
        """The bytes after the upstream's last chunk (`counted_here`: it reported no usage)."""
        ...

    def error(self, err: GatewayError) -> bytes:
        """The bytes that end a stream that failed after it started."""
        ...


class ChatSSE:
    """Chat Completions chunks as server-sent events, ending with `data: [DONE]`."""

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.last: dict[str, Any] = {}

    def chunk(self, chunk: dict[str, Any]) -> bytes | None:
        if not chunk["choices"] and chunk.get("usage"):
            return sse(chunk) if self.include_usage else None
        self.last = chunk
        if self.include_usage:
            chunk["usage"] = None
        return sse(chunk)

    def end(self, prompt_tokens: int, completion_tokens: int, counted_here: bool) -> bytes:
        if counted_here and self.include_usage:
            return sse(_usage_chunk(self.last, prompt_tokens, completion_tokens)) + DONE
        return DONE

    def error(self, err: GatewayError) -> bytes:
        # As OpenAI does: an error event, then the end of the stream.
        return sse(err.body()) + DONE


class Relay:
    """The SSE bytes of one stream, relayed chunk by chunk as the upstream produces them.

    However the stream ends (done, upstream error, client gone, or closed before
    its first byte was even asked for), `_finish()` runs exactly once: it closes
    the upstream, completes the usage and the logged text, and closes the exchange
    (which settles the limits and queues the log row).
    """

    def __init__(
        self,
        exchange: Exchange,
        request: ChatCompletionRequest,
        route: Route,
        first: dict[str, Any],
        stream: Chunks,
        dialect: StreamDialect | None = None,
    ) -> None:
        self.exchange, self.request, self.route = exchange, request, route
        self.first, self.stream = first, stream
        self.dialect: StreamDialect = dialect or ChatSSE(request.include_usage)
        self.finish_reasons: dict[int, str] = {}
        self.texts: dict[int, list[str]] = {}  # the content relayed, per choice
        self.got_usage = False
        self.estimated = False
        self.finished = False
        self._events = self._run()

    def __aiter__(self) -> Relay:
        return self

    async def __anext__(self) -> bytes:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        """Stop relaying; a stream closed before it ended counts as a client disconnect."""
        if not self.finished:
            self.exchange.client_left()
        await self._events.aclose()  # runs _run's cleanup if it had started
        await self._finish()  # and this one if it had not

    async def _run(self) -> AsyncGenerator[bytes, None]:
        idle = self.route.idle_timeout
        loop = asyncio.get_running_loop()
        try:
            try:
                # One deadline for the whole stream, moved before each upstream read (and
                # lifted while the client is being sent a chunk): cheaper than a timeout
                # context per chunk, and a slow client never counts against the upstream.
                async with asyncio.timeout(None) as deadline:
                    chunk = self.first
                    while True:
                        event = self._event(chunk)
                        if event is not None:
                            yield event
                        deadline.reschedule(loop.time() + idle)
                        try:
                            chunk = await anext(self.stream)
                        except StopAsyncIteration:
                            deadline.reschedule(None)
                            break
                        deadline.reschedule(None)
                counted_here = not self.got_usage
                if counted_here:
                    self._estimate_usage()
                end = self.dialect.end(*self.exchange.usage, counted_here)
            except TimeoutError:
                err = upstream_timeout(self.route.provider, f"no data for {idle:g} s")
                self.exchange.fail(err)
                end = self.dialect.error(err)
            except GatewayError as exc:
                self.exchange.fail(exc)
                end = self.dialect.error(exc)
            except Exception as exc:
                logger.exception("stream from %s failed", self.route.label)
                self.exchange.fail(exc)
                end = self.dialect.error(InternalError("The stream failed inside the gateway; it has been logged."))
            await self._finish()  # the log row is queued before the client sees the stream end
            yield end
        except (asyncio.CancelledError, GeneratorExit):
            self.exchange.client_left()
            raise
        finally:
            await self._finish()

    def _event(self, chunk: dict[str, Any]) -> bytes | None:
        """Account for one upstream chunk and encode it for the client."""
        choices = chunk["choices"]
        if not choices and chunk.get("usage"):
            self.got_usage = True
            self.exchange.use_reported(chunk["usage"])
        else:
            self._note(choices)
            self.exchange.first_byte()
        return self.dialect.chunk(chunk)

    def _note(self, choices: list[dict[str, Any]]) -> None:
        """Remember finish reasons and the text relayed (to log it, and count it if no usage comes)."""
        for c in choices:
            if c.get("finish_reason"):
                self.finish_reasons[c["index"]] = c["finish_reason"]
            content = (c.get("delta") or {}).get("content")
            if content:
                self.texts.setdefault(c["index"], []).append(content)

    def _estimate_usage(self) -> None:
        """Count the tokens ourselves when the upstream reported none (e.g. the stream was cut short)."""
        relayed = count_tokens("".join("".join(t) for t in self.texts.values()))
        self.exchange.use(count_prompt(self.request.messages), relayed, counted_here=True)
        self.estimated = True

    async def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        try:
            await close_quietly(self.stream)
        finally:
            if not self.got_usage and not self.estimated:
                self._estimate_usage()
            self.exchange.ended(self.finish_reasons.values(), ("".join(self.texts[i]) for i in sorted(self.texts)))
            self.exchange.close()


def _usage_chunk(last: dict[str, Any], prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    factory = ChunkFactory(last.get("model", ""), last.get("id"), last.get("created"))
    return factory.usage(usage(prompt_tokens, completion_tokens))
