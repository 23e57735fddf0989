"""The Responses API's request, as pydantic models (`CreateResponse` of OpenAI's published spec).

Every top-level parameter the spec documents is a field (a test checks it), plus
`client_metadata`, which Codex CLI sends and OpenAI accepts. Unknown parameters
are a 400 naming them, as on Chat Completions. Input items are typed for the
kinds the gateway can translate (`message`, `function_call`,
`function_call_output`, `reasoning`); any other item type is a 400 naming it.
Tools are `function` and `namespace` (a named group of functions); any other
(built-in) tool type is kept as a plain object for the built-in tool rule of
`translate.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from ..protocol import CacheBreakpoint, ModerationOptions, SemanticError, Wire

Status = Literal["in_progress", "completed", "incomplete"]

# ---- content parts -------------------------------------------------------------------------


class InputText(Wire):
    type: Literal["input_text"]
    text: str
    prompt_cache_breakpoint: CacheBreakpoint | None = None


class InputImage(Wire):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["low", "high", "auto", "original"] = "auto"
    prompt_cache_breakpoint: CacheBreakpoint | None = None


class InputFile(Wire):
    type: Literal["input_file"]
    file_id: str | None = None
    filename: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    detail: str | None = None
    prompt_cache_breakpoint: CacheBreakpoint | None = None


class OutputText(Wire):
    """An assistant's text, as clients send earlier answers back."""

    type: Literal["output_text"]
    text: str
    annotations: list[dict[str, Any]] | None = None
    logprobs: list[dict[str, Any]] | None = None


class Refusal(Wire):
    type: Literal["refusal"]
    refusal: str


Part = Annotated[InputText | InputImage | InputFile | OutputText | Refusal, Field(discriminator="type")]
ToolOutputPart = Annotated[InputText | InputImage | InputFile, Field(discriminator="type")]

# ---- input items -----------------------------------------------------------------------------


class MessageItem(Wire):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Part]
    id: str | None = None
    status: Status | None = None
    phase: Literal["commentary", "final_answer"] | None = None


class FunctionCallItem(Wire):
    type: Literal["function_call"]
    call_id: Annotated[str, Field(min_length=1)]
    name: Annotated[str, Field(min_length=1)]
    arguments: str
    id: str | None = None
    namespace: str | None = None
    status: Status | None = None
    caller: dict[str, Any] | None = None


class FunctionCallOutputItem(Wire):
    type: Literal["function_call_output"]
    call_id: Annotated[str, Field(min_length=1, max_length=64)]
    output: str | list[ToolOutputPart]
    id: str | None = None
    name: str | None = None
    namespace: str | None = None
    status: Status | None = None
    caller: dict[str, Any] | None = None


class SummaryText(Wire):
    type: Literal["summary_text"]
    text: str


class ReasoningText(Wire):
    type: Literal["reasoning_text"]
    text: str


class ReasoningItem(Wire):
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[SummaryText] = Field(default_factory=list)
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None
    status: Status | None = None


class ItemReference(Wire):
    """An item of an earlier stored response, by id (the Vercel AI SDK sends these with `store`)."""

    type: Literal["item_reference"]
    id: Annotated[str, Field(min_length=1)]


InputItem = Annotated[
    MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem, Field(discriminator="type")
]
RequestItem = Annotated[
    MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem | ItemReference,
    Field(discriminator="type"),
]
SUPPORTED_ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning", "item_reference")


def _typed_items(items: Any) -> Any:
    """Easy input messages may omit `type`; an item type the gateway can't translate is named in a 400."""
    if not isinstance(items, list):
        return items
    out = []
    for index, item in enumerate(items):
        if isinstance(item, dict):
            if item.get("type") is None and "role" in item:
                item = {**item, "type": "message"}
            elif item.get("type") is None and "id" in item:
                item = {**item, "type": "item_reference"}
            kind = item.get("type")
            if isinstance(kind, str) and kind not in SUPPORTED_ITEM_TYPES:
                raise SemanticError(
                    f"input[{index}].type",
                    f"Input items of type `{kind}` are not supported by this gateway "
                    f"(supported: {', '.join(SUPPORTED_ITEM_TYPES)}).",
                )
        out.append(item)
    return out


# ---- tools -----------------------------------------------------------------------------------

TOOL_NAME = r"^[a-zA-Z0-9_-]{1,128}$"


class FunctionTool(Wire):
    type: Literal["function"]
    name: Annotated[str, Field(pattern=TOOL_NAME)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    output_schema: dict[str, Any] | None = None
    defer_loading: bool | None = None
    allowed_callers: list[Any] | None = None


class NamespaceTool(Wire):
    type: Literal["namespace"]
    name: Annotated[str, Field(min_length=1, pattern=TOOL_NAME)]
    description: str | None = None
    tools: Annotated[list[FunctionTool], Field(min_length=1)]


class BuiltinTool(Wire):
    """A tool the model would run itself (`web_search`, `file_search`, ...): kept for the built-in tool rule."""

    model_config = ConfigDict(extra="allow", strict=True)
    type: str


def _kind_or_builtin(*known: str) -> Callable[[Any], str]:
    """A discriminator: the item's `type` when it is one of `known`, else "builtin"."""

    def kind_of(value: Any) -> str:
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        return kind if kind in known else "builtin"

    return kind_of


Tool = Annotated[
    Annotated[FunctionTool, Tag("function")]
    | Annotated[NamespaceTool, Tag("namespace")]
    | Annotated[BuiltinTool, Tag("builtin")],
    Discriminator(_kind_or_builtin("function", "namespace")),
]


class ToolChoiceFunction(Wire):
    type: Literal["function"]
    name: str
    namespace: str | None = None


class ToolChoiceAllowed(Wire):
    type: Literal["allowed_tools"]
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]]


class ToolChoiceBuiltin(Wire):
    """`{"type": "web_search"}` and the like: a built-in tool the model must use."""

    model_config = ConfigDict(extra="allow", strict=True)
    type: str


ToolChoiceObject = Annotated[
    Annotated[ToolChoiceFunction, Tag("function")]
    | Annotated[ToolChoiceAllowed, Tag("allowed_tools")]
    | Annotated[ToolChoiceBuiltin, Tag("builtin")],
    Discriminator(_kind_or_builtin("function", "allowed_tools")),
]
ToolChoice = Literal["none", "auto", "required"] | ToolChoiceObject

# ---- text format, reasoning, options ---------------------------------------------------------


class FormatText(Wire):
    type: Literal["text"]


class FormatJsonObject(Wire):
    type: Literal["json_object"]


class FormatJsonSchema(Wire):
    type: Literal["json_schema"]
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


TextFormat = Annotated[FormatText | FormatJsonObject | FormatJsonSchema, Field(discriminator="type")]


class TextOptions(Wire):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
SummaryMode = Literal["auto", "concise", "detailed"]


class ReasoningOptions(Wire):
    effort: Effort | None = None
    summary: SummaryMode | None = None
    generate_summary: SummaryMode | None = None
    mode: str | None = None
    context: str | None = None


class StreamOptions(Wire):
    include_obfuscation: bool | None = None


class PromptCacheOptions(Wire):
    ttl: str | None = None
    mode: str | None = None


Include = Literal[
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
]


class CreateResponseRequest(Wire):
    """`CreateResponse`: every parameter the spec documents, typed (and Codex's `client_metadata`)."""

    model: Annotated[str, Field(min_length=1)]
    input: str | list[RequestItem]
    instructions: str | None = None
    previous_response_id: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    store: bool | None = None
    include: list[Include] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = None
    text: TextOptions | None = None
    reasoning: ReasoningOptions | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = None
    user: str | None = None
    safety_identifier: Annotated[str, Field(max_length=64)] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    prompt_cache_options: PromptCacheOptions | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast", "ultrafast"] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    background: bool | None = None
    conversation: str | dict[str, Any] | None = None
    context_management: list[dict[str, Any]] | None = None
    prompt: dict[str, Any] | None = None
    moderation: ModerationOptions | None = None
    # Not in the spec; Codex CLI sends it (OpenAI accepts it). Accepted and not forwarded.
    client_metadata: dict[str, Any] | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _items(cls, value: Any) -> Any:
        return _typed_items(value)

    @model_validator(mode="after")
    def _consistent(self) -> CreateResponseRequest:
        if self.metadata is not None and (len(self.metadata) > 16 or any(len(k) > 64 for k in self.metadata)):
            raise SemanticError("metadata", "`metadata` holds at most 16 pairs with keys of at most 64 characters.")
        if self.stream_options is not None and not self.stream:
            raise SemanticError("stream_options", "`stream_options` is only allowed when `stream` is true.")
        if isinstance(self.input, list) and not self.input and self.previous_response_id is None:
            raise SemanticError("input", "`input` must hold at least one item.")
        return self

    @property
    def references(self) -> list[str]:
        """The ids of the stored items `input` refers to."""
        items = self.input if isinstance(self.input, list) else []
        return [item.id for item in items if isinstance(item, ItemReference)]

    @property
    def stores(self) -> bool:
        """Whether the response is kept (`store` defaults to true)."""
        return self.store is not False
