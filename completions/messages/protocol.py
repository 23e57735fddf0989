"""Anthropic's Messages API wire format: the request bodies of `POST /v1/messages` and
`POST /v1/messages/count_tokens`, validated with pydantic.

Top-level parameters are strict: every parameter Anthropic documents is accepted and
typed, an unknown one is a 400 naming it. Content blocks are typed by their `type`;
block types the gateway does not translate (server tool results, search results,
container uploads, …) are kept as they are (`OtherBlock`), so that an Anthropic route
receives them unchanged and any other route refuses them by name. Inside a block,
fields the gateway has no use for (`citations` echoed back, newer optional fields)
are kept for Anthropic routes and ignored elsewhere.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from ..protocol import SemanticError, Wire

IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
MIN_THINKING_BUDGET = 1024


class Block(BaseModel):
    """Base of content blocks: strict types, fields beyond the typed ones kept."""

    model_config = ConfigDict(extra="allow", strict=True)


class CacheControl(Wire):
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


# ---- content blocks --------------------------------------------------------------------------


class TextBlock(Block):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    citations: list[dict[str, Any]] | None = None


class Base64ImageSource(Wire):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str


class URLSource(Wire):
    type: Literal["url"]
    url: Annotated[str, Field(min_length=1)]


class FileSource(Wire):
    type: Literal["file"]
    file_id: str


ImageSource = Annotated[Base64ImageSource | URLSource | FileSource, Field(discriminator="type")]


class ImageBlock(Block):
    type: Literal["image"]
    source: ImageSource
    cache_control: CacheControl | None = None


class Base64PDFSource(Wire):
    type: Literal["base64"]
    media_type: Literal["application/pdf"]
    data: str


class PlainTextSource(Wire):
    type: Literal["text"]
    media_type: Literal["text/plain"]
    data: str


class ContentSource(Wire):
    type: Literal["content"]
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]]


DocumentSource = Annotated[
    Base64PDFSource | PlainTextSource | ContentSource | URLSource | FileSource, Field(discriminator="type")
]


class DocumentBlock(Block):
    type: Literal["document"]
    source: DocumentSource
    title: str | None = None
    context: str | None = None
    citations: dict[str, Any] | None = None
    cache_control: CacheControl | None = None


class ToolUseBlock(Block):
    type: Literal["tool_use"]
    id: Annotated[str, Field(min_length=1)]
    name: Annotated[str, Field(min_length=1)]
    input: dict[str, Any]
    cache_control: CacheControl | None = None


class ThinkingBlock(Block):
    type: Literal["thinking"]
    thinking: str
    signature: str


class RedactedThinkingBlock(Block):
    type: Literal["redacted_thinking"]
    data: str


class OtherBlock(Block):
    """A block type the gateway forwards to Anthropic routes only (server tools, search results, …)."""

    type: str


def _kind(known: frozenset[str]) -> Any:
    """A discriminator: the block's `type` when it is one of `known`, else `other`."""

    def kind(value: Any) -> str:
        tag = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        return tag if tag in known else "other"

    return Discriminator(kind)


ToolResultContent = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ImageBlock, Tag("image")]
    | Annotated[DocumentBlock, Tag("document")]
    | Annotated[OtherBlock, Tag("other")],
    _kind(frozenset({"text", "image", "document"})),
]


class ToolResultBlock(Block):
    type: Literal["tool_result"]
    tool_use_id: Annotated[str, Field(min_length=1)]
    content: str | list[ToolResultContent] | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None


ContentBlock = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ImageBlock, Tag("image")]
    | Annotated[DocumentBlock, Tag("document")]
    | Annotated[ToolUseBlock, Tag("tool_use")]
    | Annotated[ToolResultBlock, Tag("tool_result")]
    | Annotated[ThinkingBlock, Tag("thinking")]
    | Annotated[RedactedThinkingBlock, Tag("redacted_thinking")]
    | Annotated[OtherBlock, Tag("other")],
    _kind(frozenset({"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"})),
]


# ---- messages ---------------------------------------------------------------------------------


class UserMessage(Wire):
    role: Literal["user"]
    content: str | list[ContentBlock]


class AssistantMessage(Wire):
    role: Literal["assistant"]
    content: str | list[ContentBlock]


class SystemMessage(Wire):
    """A `system` turn inside `messages` (Claude Code sends its environment section this way)."""

    role: Literal["system"]
    content: str | list[TextBlock]


Message = Annotated[UserMessage | AssistantMessage | SystemMessage, Field(discriminator="role")]


# ---- tools ------------------------------------------------------------------------------------


class CustomTool(Wire):
    """A client tool: the model calls it with `input` fitting `input_schema` (JSON Schema, draft 2020-12)."""

    type: Literal["custom"] | None = None
    name: Annotated[str, Field(min_length=1, max_length=128)]
    description: str | None = None
    input_schema: dict[str, Any]
    cache_control: CacheControl | None = None
    strict: bool | None = None
    defer_loading: bool | None = None
    eager_input_streaming: bool | None = None
    input_examples: list[dict[str, Any]] | None = None
    allowed_callers: list[str] | None = None


class ServerTool(Block):
    """An Anthropic-defined tool (`web_search_20250305`, `bash_20250124`, …), by its versioned `type`."""

    type: str
    name: str


def _tool_kind(value: Any) -> str:
    tag = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "custom" if tag in (None, "custom") else "server"


Tool = Annotated[Annotated[CustomTool, Tag("custom")] | Annotated[ServerTool, Tag("server")], Discriminator(_tool_kind)]


class ToolChoiceAuto(Wire):
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(Wire):
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(Wire):
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(Wire):
    type: Literal["none"]


ToolChoice = Annotated[ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")]


# ---- options ----------------------------------------------------------------------------------

Display = Literal["summarized", "omitted"]


class ThinkingEnabled(Wire):
    type: Literal["enabled"]
    budget_tokens: Annotated[int, Field(ge=MIN_THINKING_BUDGET)]
    display: Display | None = None


class ThinkingAdaptive(Wire):
    type: Literal["adaptive"]
    display: Display | None = None


class ThinkingDisabled(Wire):
    type: Literal["disabled"]


class ThinkingBetweenTools(Wire):
    type: Literal["between_tools"]


Thinking = Annotated[
    ThinkingEnabled | ThinkingAdaptive | ThinkingDisabled | ThinkingBetweenTools, Field(discriminator="type")
]


class JsonOutputFormat(Wire):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


Effort = Literal["low", "medium", "high", "xhigh", "max"]


class OutputConfig(Wire):
    effort: Effort | None = None
    format: JsonOutputFormat | None = None


class Metadata(Wire):
    user_id: str | None = None


Unit = Annotated[float, Field(ge=0, le=1)]


class CountTokensRequest(Wire):
    """`POST /v1/messages/count_tokens`: what shapes the prompt, without the output options."""

    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[Message], Field(min_length=1)]
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    context_management: dict[str, Any] | None = None
    cache_control: CacheControl | None = None
    mcp_servers: list[dict[str, Any]] | None = None
    speed: Literal["standard", "fast"] | None = None

    @model_validator(mode="after")
    def _named_tool_exists(self) -> CountTokensRequest:
        if isinstance(self.tool_choice, ToolChoiceTool):
            names = {t.name for t in self.tools or []}
            if self.tool_choice.name not in names:
                raise SemanticError(
                    "tool_choice.name", f"tool_choice.name: `{self.tool_choice.name}` is not one of `tools`."
                )
        return self


class MessagesRequest(CountTokensRequest):
    """`POST /v1/messages`: every parameter Anthropic documents, typed."""

    max_tokens: Annotated[int, Field(ge=0)]
    stream: bool | None = None
    stop_sequences: list[str] | None = None
    temperature: Unit | None = None
    top_p: Unit | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    metadata: Metadata | None = None
    service_tier: Literal["auto", "standard_only"] | None = None
    container: str | dict[str, Any] | None = None
    inference_geo: str | None = None
    diagnostics: dict[str, Any] | None = None
    user_profile_id: str | None = None
    workspace_id: str | None = None

    @model_validator(mode="after")
    def _budget_below_max_tokens(self) -> MessagesRequest:
        if isinstance(self.thinking, ThinkingEnabled) and self.thinking.budget_tokens >= self.max_tokens:
            raise SemanticError(
                "thinking.budget_tokens",
                f"thinking.budget_tokens: must be less than max_tokens ({self.max_tokens}); "
                f"got {self.thinking.budget_tokens}.",
            )
        return self
