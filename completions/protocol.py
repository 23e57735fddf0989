"""OpenAI wire format: request models (pydantic, validated) and response/chunk builders.

The request models follow `CreateChatCompletionRequest` and
`CreateEmbeddingRequest` of OpenAI's published OpenAPI spec; a test checks that
every property the spec documents is a field here. Unknown top-level
parameters are rejected. Responses and stream chunks are plain dicts built by
the functions at the bottom, shaped as `CreateChatCompletionResponse` and
`CreateChatCompletionStreamResponse`.
"""

from __future__ import annotations

import random
import time
from typing import Annotated, Any, Literal

import orjson
from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import InvalidRequest

NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"


class Wire(BaseModel):
    """Base of every request model: strict JSON types, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class CacheBreakpoint(Wire):
    mode: Literal["explicit"] = "explicit"


# ---- content parts ------------------------------------------------------------------


class TextPart(Wire):
    type: Literal["text"]
    text: str
    prompt_cache_breakpoint: CacheBreakpoint | None = None


class ImageURL(Wire):
    url: str
    detail: Literal["auto", "low", "high"] = "auto"


class ImagePart(Wire):
    type: Literal["image_url"]
    image_url: ImageURL
    prompt_cache_breakpoint: CacheBreakpoint | None = None


class InputAudio(Wire):
    data: str
    format: Literal["wav", "mp3"]


class AudioPart(Wire):
    type: Literal["input_audio"]
    input_audio: InputAudio
    prompt_cache_breakpoint: CacheBreakpoint | None = None


class FileRef(Wire):
    filename: str | None = None
    file_data: str | None = None
    file_id: str | None = None


class FilePart(Wire):
    type: Literal["file"]
    file: FileRef
    prompt_cache_breakpoint: CacheBreakpoint | None = None


class RefusalPart(Wire):
    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[TextPart | ImagePart | AudioPart | FilePart, Field(discriminator="type")]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]
TextParts = Annotated[list[TextPart], Field(min_length=1)]


# ---- tool calls inside assistant messages -----------------------------------------------


class FunctionCall(Wire):
    name: str
    arguments: str


class FunctionToolCall(Wire):
    id: str
    type: Literal["function"]
    function: FunctionCall
    # Google's OpenAI-compatible extension: {"google": {"thought_signature": "..."}}.
    extra_content: dict[str, Any] | None = None


class CustomCall(Wire):
    name: str
    input: str


class CustomToolCall(Wire):
    id: str
    type: Literal["custom"]
    custom: CustomCall


ToolCall = Annotated[FunctionToolCall | CustomToolCall, Field(discriminator="type")]


class AudioRef(Wire):
    id: str


# ---- messages -------------------------------------------------------------------------


class SystemMessage(Wire):
    role: Literal["system"]
    content: str | TextParts
    name: str | None = None


class DeveloperMessage(Wire):
    role: Literal["developer"]
    content: str | TextParts
    name: str | None = None


class UserMessage(Wire):
    role: Literal["user"]
    content: str | Annotated[list[UserPart], Field(min_length=1)]
    name: str | None = None


class AssistantMessage(Wire):
    role: Literal["assistant"]
    content: str | Annotated[list[AssistantPart], Field(min_length=1)] | None = None
    refusal: str | None = None
    name: str | None = None
    audio: AudioRef | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None
    # A response field that clients commonly echo back into the history; ignored.
    annotations: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _content_or_calls(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls and self.function_call is None and self.refusal is None:
            raise ValueError("an assistant message needs `content` unless it has `tool_calls`")
        return self


class ToolMessage(Wire):
    role: Literal["tool"]
    content: str | TextParts
    tool_call_id: str


class FunctionMessage(Wire):
    role: Literal["function"]
    content: str | None
    name: str


Message = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage,
    Field(discriminator="role"),
]

# Fields that widely used clients send inside messages although OpenAI's spec has no place for
# them (OpenAI's API tolerates them). Top-level parameters stay strict (a misspelt parameter is a
# 400); inside messages these are accepted and dropped, or mapped where the gateway has an
# equivalent. Each is tested (tests/test_protocol.py).
TOLERATED_MESSAGE_FIELDS: dict[str, dict[str, str]] = {
    "tool": {"name": "@langchain/openai sends the function's name on tool results"},
    "assistant": {
        "reasoning_content": "DeepSeek-style clients (LangChain, LiteLLM) echo the reasoning text back",
        "reasoning": "OpenRouter-style clients echo the reasoning text back",
        "thinking_blocks": "LiteLLM echoes Anthropic thinking blocks back",
        "provider_specific_fields": "LiteLLM's passthrough of provider extras",
        "parsed": "the openai SDK's parse() answer (ParsedChatCompletionMessage) appended to the history",
    },
}
# Inside an assistant message's `tool_calls` entries.
TOLERATED_TOOL_CALL_FIELDS = {"index": "clients that rebuild calls from stream deltas keep the delta's index"}
# Inside a tool call's `function`.
TOLERATED_FUNCTION_FIELDS = {
    "parsed_arguments": "the openai SDK's parse() with strict pydantic tools: its parsed call appended to the history"
}
# Inside content parts: `cache_control` (Anthropic's form, sent by LiteLLM and LangChain for Claude)
# is mapped to OpenAI's `prompt_cache_breakpoint`.
CACHE_CONTROL = "cache_control"


def _tolerate(message: Any) -> Any:
    """A message with the tolerated client fields dropped or mapped (anything else is left to validation)."""
    if not isinstance(message, dict):
        return message
    extra = TOLERATED_MESSAGE_FIELDS.get(str(message.get("role")), {})
    cleaned = {k: v for k, v in message.items() if k not in extra}
    calls = cleaned.get("tool_calls")
    if isinstance(calls, list):
        cleaned["tool_calls"] = [_tolerate_call(c) for c in calls]
    content = cleaned.get("content")
    if isinstance(content, list) and any(isinstance(part, dict) and CACHE_CONTROL in part for part in content):
        cleaned["content"] = [_cache_control_to_breakpoint(part) for part in content]
    return cleaned


def _tolerate_call(call: Any) -> Any:
    if not isinstance(call, dict):
        return call
    cleaned = {k: v for k, v in call.items() if k not in TOLERATED_TOOL_CALL_FIELDS}
    function = cleaned.get("function")
    if isinstance(function, dict):
        cleaned["function"] = {k: v for k, v in function.items() if k not in TOLERATED_FUNCTION_FIELDS}
    return cleaned


def _cache_control_to_breakpoint(part: Any) -> Any:
    if not isinstance(part, dict) or CACHE_CONTROL not in part:
        return part
    mapped = {k: v for k, v in part.items() if k != CACHE_CONTROL}
    if part[CACHE_CONTROL] is not None:
        mapped.setdefault("prompt_cache_breakpoint", {"mode": "explicit"})
    return mapped


# ---- tools ---------------------------------------------------------------------------


class FunctionDefinition(Wire):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionTool(Wire):
    type: Literal["function"]
    function: FunctionDefinition


class CustomToolDefinition(Wire):
    name: str
    description: str | None = None
    format: dict[str, Any] | None = None


class CustomTool(Wire):
    type: Literal["custom"]
    custom: CustomToolDefinition


Tool = Annotated[FunctionTool | CustomTool, Field(discriminator="type")]


class NamedFunction(Wire):
    name: str


class NamedToolChoice(Wire):
    type: Literal["function"]
    function: NamedFunction


class NamedCustomToolChoice(Wire):
    type: Literal["custom"]
    custom: NamedFunction


class AllowedTools(Wire):
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]]


class AllowedToolsChoice(Wire):
    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


ToolChoiceObject = Annotated[NamedToolChoice | NamedCustomToolChoice | AllowedToolsChoice, Field(discriminator="type")]
ToolChoice = Literal["none", "auto", "required"] | ToolChoiceObject


class FunctionsEntry(Wire):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str | None = None
    parameters: dict[str, Any] | None = None


# ---- response format and other options ------------------------------------------------


class ResponseFormatText(Wire):
    type: Literal["text"]


class ResponseFormatJsonObject(Wire):
    type: Literal["json_object"]


class JsonSchemaSpec(Wire):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormatJsonSchema(Wire):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema,
    Field(discriminator="type"),
]


class StreamOptions(Wire):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class WebSearchOptions(Wire):
    user_location: dict[str, Any] | None = None
    search_context_size: Literal["low", "medium", "high"] | None = None


class AudioOutput(Wire):
    voice: str | dict[str, Any]
    format: Literal["wav", "aac", "mp3", "flac", "opus", "pcm16"]


class Prediction(Wire):
    type: Literal["content"]
    content: str | TextParts


class PromptCacheOptions(Wire):
    ttl: str | None = None
    mode: str | None = None


class ModerationOptions(Wire):
    model: str
    policy: dict[str, Any] | None = None


Penalty = Annotated[float, Field(ge=-2, le=2)]


class ChatCompletionRequest(Wire):
    """`CreateChatCompletionRequest`: every parameter the spec documents, typed."""

    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[Message], Field(min_length=1)]
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = None

    @field_validator("messages", mode="before")
    @classmethod
    def _tolerated_fields(cls, messages: Any) -> Any:
        return [_tolerate(m) for m in messages] if isinstance(messages, list) else messages

    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    stop: str | Annotated[list[str], Field(min_length=1, max_length=4)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, Annotated[int, Field(ge=-100, le=100)]] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    seed: int | None = None
    user: str | None = None
    safety_identifier: Annotated[str, Field(max_length=64)] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    prompt_cache_options: PromptCacheOptions | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: Annotated[list[FunctionsEntry], Field(min_length=1, max_length=128)] | None = None
    function_call: Literal["none", "auto"] | NamedFunction | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast"] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioOutput | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None
    web_search_options: WebSearchOptions | None = None
    store: bool | None = None
    moderation: ModerationOptions | None = None
    prediction: Prediction | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.metadata is not None and (len(self.metadata) > 16 or any(len(k) > 64 for k in self.metadata)):
            raise _semantic("metadata", "`metadata` holds at most 16 pairs with keys of at most 64 characters.")
        if self.stream_options is not None and not self.stream:
            raise _semantic(
                "stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled."
            )
        if self.top_logprobs is not None and not self.logprobs:
            raise _semantic("top_logprobs", "`top_logprobs` requires `logprobs` to be true.")
        if self.tool_choice is not None and not self.tools:
            raise _semantic("tool_choice", "`tool_choice` is only allowed when `tools` are specified.")
        if self.parallel_tool_calls is not None and not self.tools:
            raise _semantic("parallel_tool_calls", "`parallel_tool_calls` is only allowed when `tools` are specified.")
        if isinstance(self.tool_choice, NamedToolChoice):
            wanted = self.tool_choice.function.name
            if wanted not in self.function_names():
                raise _semantic("tool_choice", f"`tool_choice` names `{wanted}`, which is not one of `tools`.")
        return self

    # ---- conveniences for providers ----
    @property
    def output_limit(self) -> int | None:
        """The requested cap on generated tokens (`max_completion_tokens` wins over `max_tokens`)."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def stop_sequences(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    @property
    def choices(self) -> int:
        return self.n or 1

    def function_names(self) -> list[str]:
        return [t.function.name for t in self.tools or [] if isinstance(t, FunctionTool)]


class SemanticError(ValueError):
    """A cross-field rule broken inside a valid shape; carries the parameter name."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


def _semantic(param: str, message: str) -> SemanticError:
    return SemanticError(param, message)


class EmbeddingRequest(Wire):
    """`CreateEmbeddingRequest`."""

    model: Annotated[str, Field(min_length=1)]
    input: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[str], Field(min_length=1, max_length=2048)]
        | Annotated[list[int], Field(min_length=1, max_length=2048)]
        | Annotated[list[Annotated[list[int], Field(min_length=1)]], Field(min_length=1, max_length=2048)]
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _bounded(self) -> EmbeddingRequest:
        """Bound the answer's size before any work: dimensions, and inputs x dimensions."""
        if self.dimensions is None:
            return self
        if self.dimensions > settings.GATEWAY_MAX_EMBEDDING_DIMENSIONS:
            raise _semantic(
                "dimensions",
                f"`dimensions` is at most {settings.GATEWAY_MAX_EMBEDDING_DIMENSIONS} on this gateway "
                f"(got {self.dimensions}).",
            )
        values = self.input_count * self.dimensions
        if values > settings.GATEWAY_MAX_EMBEDDING_VALUES:
            raise _semantic(
                "input",
                f"{self.input_count} inputs of {self.dimensions} dimensions is {values} values, more than the "
                f"{settings.GATEWAY_MAX_EMBEDDING_VALUES} one request may ask for: send fewer inputs per request.",
            )
        return self

    @property
    def input_count(self) -> int:
        """How many embeddings the request asks for (a list of token ids is one input)."""
        if isinstance(self.input, str) or (self.input and isinstance(self.input[0], int)):
            return 1
        return len(self.input)

    @property
    def texts(self) -> list[str]:
        """The inputs as a list of strings (token-array inputs are not text)."""
        if isinstance(self.input, str):
            return [self.input]
        if all(isinstance(x, str) for x in self.input):
            return list(self.input)  # type: ignore[arg-type]
        raise InvalidRequest("Token-array inputs are not supported by this gateway; send strings.", param="input")


# ---- parsing ---------------------------------------------------------------------------


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Decode a request body that must be one JSON object."""
    if not body:
        raise InvalidRequest("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request: {exc.msg} at position {exc.pos}.",
            code="invalid_json",
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest(
            f"The request body must be a JSON object, not {type(data).__name__ if data is not None else 'null'}.",
            code="invalid_json",
        )
    return data


def validate(model: type[Wire], data: dict[str, Any]) -> Any:
    """Validate `data` as `model`; the first problem becomes a 400 naming its parameter."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _to_invalid_request(exc, data) from None


def _to_invalid_request(exc: ValidationError, data: dict[str, Any]) -> InvalidRequest:
    errors = exc.errors(include_url=False)
    for err in errors:
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, SemanticError):
            return InvalidRequest(ctx_error.message, param=ctx_error.param)
    err = _most_specific(errors)
    param = param_from_loc(err["loc"], data, name_last=err["type"] in ("missing", "extra_forbidden"))
    if err["type"] == "extra_forbidden":
        if "." not in param and "[" not in param:
            return InvalidRequest(f"Unrecognized request argument supplied: {param}", param=param)
        return InvalidRequest(f"Unrecognized parameter: '{param}'.", param=param)
    if err["type"] == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param)
    message = str(err["msg"]).removeprefix("Value error, ")
    return InvalidRequest(f"Invalid value for '{param}': {message}.".replace("..", "."), param=param)


def _most_specific(errors: list[Any]) -> Any:
    """Among a union's alternatives, prefer a value error over a type mismatch, then the deepest."""
    return max(errors, key=lambda e: (not e["type"].endswith("_type"), len(e["loc"])))


def param_from_loc(loc: tuple[Any, ...], data: Any, name_last: bool = False) -> str:
    """Turn a pydantic error location into OpenAI's `param` (`messages[0].content`).

    The location is walked against the input itself, so that union branch labels
    and discriminator tags (which are not keys of the input) drop out; with
    `name_last`, a final key absent from the input (missing, unknown) is kept.
    """
    parts: list[str] = []
    node = data
    for i, item in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(item, int) and isinstance(node, list) and 0 <= item < len(node):
            parts.append(f"[{item}]")
            node = node[item]
        elif isinstance(item, str) and isinstance(node, dict) and item in node:
            parts.append(f".{item}" if parts else item)
            node = node[item]
        elif last and name_last and isinstance(item, str):
            # A missing or unknown key: the key itself is the parameter.
            parts.append(f".{item}" if parts else item)
    return "".join(parts) or "body"


# ---- responses and chunks ------------------------------------------------------------------


_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def random_id(prefix: str, length: int = 24) -> str:
    """A unique, non-secret id (`chatcmpl-…`, `call_…`, `req_…`).

    Ids are not credentials, so they come from the fast Mersenne Twister (seeded
    from the OS, reseeded in every forked worker) instead of `secrets`, which
    costs a system call per id on the hot path.
    """
    n = random.getrandbits(6 * length)
    chars = []
    for _ in range(length):
        n, r = divmod(n, 62)
        chars.append(_ALPHABET[r])
    return prefix + "".join(chars)


def new_completion_id() -> str:
    return random_id("chatcmpl-")


def now() -> int:
    return int(time.time())


def usage(prompt: int, completion: int, *, reasoning: int | None = None, cached: int | None = None) -> dict[str, Any]:
    """`CompletionUsage`, with the optional detail blocks when known."""
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if reasoning is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    if cached is not None:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def message(
    content: str | None,
    tool_calls: list[dict[str, Any]] | None = None,
    refusal: str | None = None,
) -> dict[str, Any]:
    """`ChatCompletionResponseMessage`."""
    msg: dict[str, Any] = {"role": "assistant", "content": content, "refusal": refusal}
    if tool_calls:
        msg["tool_calls"] = tool_calls
    return msg


def choice(
    index: int, msg: dict[str, Any], finish_reason: str, logprobs: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"index": index, "message": msg, "logprobs": logprobs, "finish_reason": finish_reason}


def completion(
    completion_id: str, created: int, model: str, choices: list[dict[str, Any]], usage_: dict[str, Any] | None
) -> dict[str, Any]:
    """`CreateChatCompletionResponse` (without `usage` when the upstream reported none)."""
    out = {"id": completion_id, "object": "chat.completion", "created": created, "model": model, "choices": choices}
    if usage_:
        out["usage"] = usage_
    return out


class ChunkFactory:
    """Builds the chunks of one stream, sharing its id, creation time and model."""

    __slots__ = ("created", "id", "model")

    def __init__(self, model: str, completion_id: str | None = None, created: int | None = None) -> None:
        self.id = completion_id or new_completion_id()
        self.created = created or now()
        self.model = model

    def delta(
        self,
        index: int,
        delta: dict[str, Any],
        finish_reason: str | None = None,
        logprobs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One chunk carrying `delta` for choice `index`."""
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}],
        }

    def usage(self, usage_: dict[str, Any]) -> dict[str, Any]:
        """The final usage chunk: no choices."""
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage_,
        }


def model_entry(model_id: str, owned_by: str, created: int = 0) -> dict[str, Any]:
    """`Model`."""
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text parts joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.text for p in content if isinstance(p, TextPart))
