"""A paced streaming upstream: answers any POST with an OpenAI chat-completion stream, one chunk
every `interval` (the first at once), then a usage chunk and `data: [DONE]`.

The first path segment picks the pace: `/paced/...` (`--chunks`/`--interval-ms`, for time to
first token under load) and `/long/...` (`--long-chunks`/`--long-interval-ms`, streams that stay
open for seconds, for counting what an open stream costs). HTTP/1.1 with keep-alive and chunked
bodies, on asyncio streams (uvloop when installed): cheap enough to be no one's bottleneck.

    python bench/paced_upstream.py --port 8090
"""

from __future__ import annotations

import argparse
import asyncio
import json

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def event(payload: dict[str, object]) -> bytes:
    data = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def chunk(content: str | None, finish: str | None = None) -> dict[str, object]:
    delta = {"content": content} if content is not None else {}
    return {
        "id": "chatcmpl-paced",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "bench-paced",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


USAGE = {
    "id": "chatcmpl-paced",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "bench-paced",
    "choices": [],
    "usage": {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32},
}


class Paced:
    def __init__(self, paces: dict[bytes, tuple[int, float]]) -> None:
        self.paces = paces
        first = chunk(" word")
        first["choices"][0]["delta"]["role"] = "assistant"  # type: ignore[index]
        self.first = event(first)
        self.word = event(chunk(" word"))
        self.tail = event(chunk(None, "stop")) + event(USAGE) + event_done()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                if length:
                    await reader.readexactly(length)
                path = head.split(b" ", 2)[1]
                chunks, interval = self.paces.get(path.split(b"/", 2)[1], next(iter(self.paces.values())))
                writer.write(HEAD + self.first)
                for _ in range(chunks - 1):
                    await asyncio.sleep(interval)
                    writer.write(self.word)
                await asyncio.sleep(interval)
                writer.write(self.tail + b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


def event_done() -> bytes:
    data = b"data: [DONE]\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


async def main(args: argparse.Namespace) -> None:
    paced = Paced(
        {
            b"paced": (args.chunks, args.interval_ms / 1000),
            b"long": (args.long_chunks, args.long_interval_ms / 1000),
        }
    )
    server = await asyncio.start_server(paced.serve, "127.0.0.1", args.port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--interval-ms", type=float, default=20)
    parser.add_argument("--long-chunks", type=int, default=40)
    parser.add_argument("--long-interval-ms", type=float, default=250)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(parser.parse_args()))
    else:
        uvloop.run(main(parser.parse_args()))
