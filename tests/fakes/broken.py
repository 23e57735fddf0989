"""A provider with a bug in it: proves an internal error never leaks a traceback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from completions.protocol import ChunkFactory
from completions.providers.base import Prepared, Provider


class BrokenProvider(Provider):
    name = "broken"

    async def complete(self, prepared: Prepared[None]) -> dict[str, Any]:
        raise KeyError("secret-internal-detail")

    async def stream(self, prepared: Prepared[None]) -> AsyncIterator[dict[str, Any]]:
        chunks = ChunkFactory(self.route.upstream_model)
        yield chunks.delta(0, {"role": "assistant", "content": "partial"})
        raise KeyError("secret-internal-detail")
