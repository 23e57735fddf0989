"""A whole-provider double that counts: how often the gateway prepares a request and sends it, per route.

Route options: `reject` (parameter names it cannot honour: `prepare()` raises for them),
`fail` (how many attempts answer 503 before one succeeds). The gateway runs in a thread of
the test process, so the tests read `CountingProvider.log` directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

from completions import protocol as p
from completions.errors import ServiceUnavailable
from completions.providers.base import Prepared, Provider, unsupported


class CountingProvider(Provider):
    name = "counting"
    supported_params = frozenset(p.ChatCompletionRequest.model_fields)
    # public model name -> ("prepare" | "attempt", id of the Prepared) in order
    log: ClassVar[dict[str, list[tuple[str, int]]]] = {}

    def translate(self, request: p.ChatCompletionRequest) -> dict[str, Any]:
        for param in self.route.options.get("reject", ()):
            if param in request.model_fields_set:
                raise unsupported(param, f"The counting provider does not honour `{param}`.")
        return {"model": self.route.upstream_model}

    def prepare(self, request: p.ChatCompletionRequest) -> Prepared[Any]:
        prepared = super().prepare(request)
        self.log.setdefault(self.route.model_name, []).append(("prepare", id(prepared)))
        return prepared

    def _attempt(self, prepared: Prepared[Any]) -> None:
        entries = self.log.setdefault(self.route.model_name, [])
        entries.append(("attempt", id(prepared)))
        if sum(1 for kind, _ in entries if kind == "attempt") <= int(self.route.options.get("fail", 0)):
            raise ServiceUnavailable("The counting upstream is overloaded.", code="upstream_overloaded")

    async def complete(self, prepared: Prepared[Any]) -> dict[str, Any]:
        self._attempt(prepared)
        message = p.message(f"served by {self.route.model_name}")
        return p.completion(
            p.new_completion_id(), p.now(), prepared.payload["model"], [p.choice(0, message, "stop")], p.usage(1, 3)
        )

    async def stream(self, prepared: Prepared[Any]) -> AsyncIterator[dict[str, Any]]:
        self._attempt(prepared)
        chunks = p.ChunkFactory(prepared.payload["model"])
        yield chunks.delta(0, {"role": "assistant", "content": f"served by {self.route.model_name}"})
        yield chunks.delta(0, {}, finish_reason="stop")
        yield chunks.usage(p.usage(1, 3))
