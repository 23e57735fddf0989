"""The provider interface: a validated OpenAI request in, an OpenAI response or chunk stream out.

Each provider module holds all of one provider's translation, split into pure
functions (OpenAI request -> provider request, provider answer -> OpenAI
response or chunks) and a small class doing the I/O. Providers raise
`GatewayError`s with the status OpenAI would use.

A request is prepared once per route, before any upstream call:
`prepare()` checks that the route can honour it and translates it in the same
pass, and every attempt on that route sends the same `Prepared` payload with
`complete()` or `stream()`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import orjson

from ..errors import GatewayError, InvalidRequest, ServiceUnavailable
from ..protocol import ChatCompletionRequest, EmbeddingRequest
from ..redaction import watch_env


@dataclass(frozen=True)
class Route:
    """One way to serve a public model: which provider, which upstream model, how."""

    model_name: str
    provider: str
    upstream_model: str
    id: int | None = None  # ModelRoute primary key; None for built-in routes
    base_url: str = ""
    api_key_env: str = ""
    weight: int = 1
    connect_timeout: float = 5.0
    first_byte_timeout: float = 60.0
    idle_timeout: float = 30.0
    max_retries: int = 1
    fallbacks: tuple[str, ...] = ()
    input_price: Decimal = Decimal(0)
    output_price: Decimal = Decimal(0)
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    aliases: tuple[str, ...] = ()
    # `options` as canonical JSON: routes that differ only in their options are different routes.
    options_key: bytes = field(default=b"", init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options_key", orjson.dumps(self.options, option=orjson.OPT_SORT_KEYS))
        watch_env(self.api_key_env)  # its value is a credential: redacted from any upstream text

    @property
    def label(self) -> str:
        """How the route is named in logs and attempt lists."""
        return f"{self.provider}:{self.upstream_model}" + (f"#{self.id}" if self.id else "")

    def credential(self) -> str | None:
        """The provider credential from the environment (never stored, never logged)."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def require_credential(self) -> str:
        value = self.credential()
        if not value:
            raise ServiceUnavailable(
                f"The route for `{self.model_name}` has no credential configured on the gateway.",
                code="upstream_credential_missing",
            )
        return value


# Parameters every provider handles: they shape the exchange, not the model's output.
# `prompt_cache_key` is a best-effort cache-routing hint (OpenAI promises nothing with it);
# providers that cache prompts do so on their own.
CORE_PARAMS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "metadata",
        "user",
        "safety_identifier",
        "store",
        "prompt_cache_key",
    }
)


def unsupported(param: str, message: str) -> InvalidRequest:
    """The 400 for a parameter (or a value of it) this route cannot honour."""
    return InvalidRequest(message, param=param, code="unsupported_parameter")


def invalid(param: str, message: str) -> InvalidRequest:
    """The 400 for a value this route's provider cannot take as it is."""
    return InvalidRequest(message, param=param)


# A provider's one mapping of upstream failures (SDK and transport exceptions) to gateway errors: by
# HTTP status through `errors.from_upstream_status`, connection failures and timeouts through
# `errors.upstream_unreachable` / `errors.upstream_timeout`; None for what is not an upstream failure.
ErrorMapping = Callable[[Exception], GatewayError | None]


@contextmanager
def upstream_failures(mapping: ErrorMapping) -> Iterator[None]:
    """Around every upstream call: a failure inside becomes the gateway error the provider's mapping gives.

    Gateway errors, and exceptions the mapping does not claim (bugs, StopAsyncIteration), pass unchanged.
    """
    try:
        yield
    except GatewayError:
        raise
    except Exception as exc:
        err = mapping(exc)
        if err is None:
            raise
        raise err from exc


PayloadT = TypeVar("PayloadT")
EventT_contra = TypeVar("EventT_contra", contravariant=True)


class StreamTranslator(Protocol[EventT_contra]):
    """The one shape of every provider's stream translation: upstream events in, OpenAI chunks out."""

    def feed(self, event: EventT_contra) -> list[dict[str, Any]]:
        """The chunks one upstream event produces (often none); raises the gateway error an error event means."""
        ...

    def finish(self) -> list[dict[str, Any]]:
        """The chunks due once the upstream ended: what is still open, then the usage chunk (last, if any).

        Raises when the way the stream ended is itself an error (cut short, an error event held back).
        """
        ...


@dataclass(frozen=True, slots=True)
class Prepared(Generic[PayloadT]):
    """A request one route's provider has checked and translated: what every attempt on it sends."""

    request: ChatCompletionRequest
    payload: PayloadT  # the provider's own request (Gemini contents and config, Anthropic params, a JSON body)
    # Response headers the provider adds while answering (`x-gateway-tool-calls-dropped`): set by the
    # attempt that answers, sent with its answer (a stream's, as they stand when its first chunk came).
    notes: dict[str, str] = field(default_factory=dict)


class Provider:
    """Base class: one instance per route, holding that route's pooled client."""

    name: ClassVar[str] = ""
    # Request parameters this provider honours, besides CORE_PARAMS.
    supported_params: ClassVar[frozenset[str]] = frozenset()
    # Whether it reads back the `extra_content` it puts on tool calls (signatures, thinking blocks), which
    # the gateway then keeps for clients that drop it (completions/tool_state.py).
    keeps_tool_state: ClassVar[bool] = False

    def __init__(self, route: Route) -> None:
        self.route = route

    def prepare(self, request: ChatCompletionRequest) -> Prepared[Any]:
        """Check and translate `request` for this route in one pass, before any upstream call.

        A parameter the provider does not honour, or a value it cannot, is an `InvalidRequest`
        naming it in `param` (code `unsupported_parameter` when the provider has no equivalent).
        """
        for param in request.model_fields_set:
            if param in CORE_PARAMS or param in self.supported_params:
                continue
            if getattr(request, param) is None:
                continue
            raise unsupported(
                param,
                f"The parameter `{param}` is not supported by model `{request.model}` "
                f"(served by the {self.name} provider).",
            )
        return Prepared(request, self.translate(request))

    def translate(self, request: ChatCompletionRequest) -> Any:
        """The provider's own request for `request` (raising for what it can't honour); None if it needs none."""
        return None

    async def complete(self, prepared: Prepared[Any]) -> dict[str, Any]:
        """A whole `CreateChatCompletionResponse`, with usage."""
        raise NotImplementedError

    def stream(self, prepared: Prepared[Any]) -> AsyncIterator[dict[str, Any]]:
        """Chunks as they arrive; the last one is always a usage chunk (`choices: []`)."""
        raise NotImplementedError

    async def embed(self, request: EmbeddingRequest) -> dict[str, Any]:
        """A `CreateEmbeddingResponse` (float vectors; the view encodes base64)."""
        raise InvalidRequest(
            f"Model `{request.model}` does not support embeddings.", param="model", code="unsupported_model"
        )

    async def aclose(self) -> None:
        """Release pooled connections."""
