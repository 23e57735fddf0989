"""Serving one embeddings request: route with failover, encode as the client asked, fill the log record."""

from __future__ import annotations

import base64
import struct
from decimal import Decimal
from typing import Any

from .auth import Caller
from .chat import Outcome, route_and_admit, route_headers, use_route
from .failover import call_with_failover, with_timeout
from .limits import settle_soon
from .pricing import cost_nanos
from .protocol import EmbeddingRequest
from .providers import Provider, Route
from .recorder import RequestRecord
from .routing import router
from .tokens import count_embedding_input


def encode_base64(vector: list[float]) -> str:
    """OpenAI's base64 encoding: the vector as little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


async def create(request: EmbeddingRequest, record: RequestRecord, caller: Caller) -> Outcome:
    """A `CreateEmbeddingResponse` for `request`."""
    tokens = count_embedding_input(request.input)
    routes, admission = await route_and_admit(
        caller, request.model, lambda route: (tokens, cost_nanos(tokens, 0, route.input_price, Decimal(0)))
    )

    async def embed(provider: Provider, route: Route) -> dict[str, Any]:
        return await with_timeout(provider.embed(request), route.first_byte_timeout, route.provider)

    try:
        result, route = await call_with_failover(routes, record, router.provider, lambda provider: None, embed)
    except BaseException:
        settle_soon(admission, 0, 0)
        raise
    use_route(record, route)
    if not result.get("usage"):
        # The upstream reported none: count it ourselves, and say so in the log.
        result["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        record.usage_estimated = True
    record.prompt_tokens = int(result["usage"].get("prompt_tokens") or 0)
    record.completion_tokens = 0
    settle_soon(admission, record.total_tokens, record.cost_nanos)
    if request.encoding_format == "base64":
        for item in result["data"]:
            if isinstance(item["embedding"], list):
                item["embedding"] = encode_base64(item["embedding"])
    result.setdefault("model", route.upstream_model)
    return Outcome(body=result, headers={**admission.headers, **route_headers(record)})
