"""Redis commands issued during one turn of the event loop, sent as one pipeline.

redis-py's asyncio client takes a pooled connection for every command, wraps it in its retry
layer, and opens another connection whenever all are busy: at 64 concurrent requests the
limiter's two script calls per request were about a quarter of a worker's event-loop time, and
200 open streams ran the pool out (`MaxConnectionsError`, answered 500). The limiter's calls are
independent of one another, so `AutoPipeline` queues the commands issued while the loop runs
and sends them, when it next polls, as one non-transactional redis-py pipeline: one write, one
connection, the replies matched in order. At most `max_in_flight` pipelines are out at once;
while they are, new commands wait and go out together in the next one, so under load the
batches grow instead of the number of connections.

A failed pipeline (connection lost, timed out) fails every command in it with redis-py's own
exception, which the caller's circuit counts as for a single command. The client's one retry
after a dropped connection resends the whole pipeline, as it resent a single command before: a
command Redis ran before the drop may run twice (for the limiter: a request counted twice against
a limit, which errs on the safe side), never zero times.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

Arg = str | bytes | int | float


class Script:
    """A Lua script called by its SHA1, sent whole only when Redis does not know it yet."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class AutoPipeline:
    """Batches the commands of one turn of the event loop into one pipeline of `client`."""

    def __init__(self, client: Redis, *, max_in_flight: int = 4, max_batch: int = 1000) -> None:
        self.client = client
        self.max_in_flight = max_in_flight
        self.max_batch = max_batch
        self._queue: list[tuple[tuple[Arg, ...], asyncio.Future[Any]]] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0  # pipelines sent so far

    def execute(self, *args: Arg) -> asyncio.Future[Any]:
        """Queue one command; its reply (or its error) arrives in the returned future."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((args, future))
        if not self._scheduled and self._in_flight < self.max_in_flight:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    async def script(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run `script` (EVALSHA; EVAL once if Redis lost it, e.g. after a restart or SCRIPT FLUSH)."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    def _flush(self) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        while self._queue and self._in_flight < self.max_in_flight:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            self._in_flight += 1
            self.sent += 1
            task = loop.create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[tuple[Arg, ...], asyncio.Future[Any]]]) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            for args, _ in batch:
                pipe.execute_command(*args)
            replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:  # the loop is closing
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # the connection failed or timed out: every command in it did
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), reply in zip(batch, replies, strict=True):
                if future.done():  # its caller stopped waiting (cancelled)
                    continue
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        finally:
            self._in_flight -= 1
            if self._queue and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
