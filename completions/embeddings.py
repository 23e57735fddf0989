"""Serving one embeddings request, top to bottom: routes, admission, failover, encoding as asked."""

from __future__ import annotations

import base64
import struct
from decimal import Decimal
from typing import Any

from django.http import HttpResponseBase

from .exchange import Exchange
from .failover import with_timeout
from .pricing import cost_nanos
from .protocol import EmbeddingRequest
from .tokens import count_embedding_input


def encode_base64(vector: list[float]) -> str:
    """OpenAI's base64 encoding: the vector as little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


async def create(ex: Exchange, request: EmbeddingRequest) -> HttpResponseBase:
    """A `CreateEmbeddingResponse` for `request`."""
    tokens = count_embedding_input(request.input)
    routes = await ex.resolve(request.model)
    await ex.admit((tokens, cost_nanos(tokens, 0, routes[0].input_price, Decimal(0))) if ex.limited else (0, 0))

    async for attempt in ex.failover(routes):
        async with attempt:
            route = attempt.route
            result = await with_timeout(attempt.provider.embed(request), route.first_byte_timeout, route.provider)
    ex.served_by(attempt.route)
    _account(ex, result, tokens)
    if request.encoding_format == "base64":
        for item in result["data"]:
            if isinstance(item["embedding"], list):
                item["embedding"] = encode_base64(item["embedding"])
    result.setdefault("model", attempt.route.upstream_model)
    return ex.respond(result)


def _account(ex: Exchange, result: dict[str, Any], estimated_tokens: int) -> None:
    if result.get("usage"):
        ex.use(int(result["usage"].get("prompt_tokens") or 0), 0)
    else:
        # The upstream reported none: count it ourselves, and say so in the log.
        result["usage"] = {"prompt_tokens": estimated_tokens, "total_tokens": estimated_tokens}
        ex.use(estimated_tokens, 0, counted_here=True)
