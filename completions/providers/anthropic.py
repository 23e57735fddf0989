"""Anthropic's Messages API through the `anthropic` SDK (2.12).

Pure translation at module level (OpenAI request -> `messages.create()`
arguments; Anthropic message or stream events -> OpenAI response or chunks),
and `AnthropicProvider` doing the I/O with one pooled `AsyncAnthropic` client.

Mapping, OpenAI -> Anthropic:
- system and developer messages -> `system` text blocks (wherever they appear,
  in order); user/assistant/tool messages -> turns, consecutive same-role turns
  merged; tool messages -> `tool_result` blocks in a user turn; assistant
  `tool_calls` -> `tool_use` blocks (arguments JSON-decoded into `input`).
- images: data URLs -> base64 source, http(s) URLs -> url source; `detail`
  "auto"/"high" (Anthropic always reads at full supported resolution); PDF or
  plain-text `file_data` -> document blocks (`filename` -> `title`).
- `prompt_cache_breakpoint` on a part -> `cache_control: {"type": "ephemeral"}`
  on its block; `prompt_cache_options.ttl` "30m" -> `"ttl": "1h"` (the TTL is a
  minimum); `prompt_cache_options.mode` "implicit" -> top-level `cache_control`
  (automatic breakpoint), "explicit" -> only the explicit ones.
- `max_completion_tokens`/`max_tokens` -> `max_tokens`, else the route option
  `default_max_tokens` (4096); `stop` -> `stop_sequences`; `temperature` (0-1)
  and `top_p` -> the body via `extra_body`; `user`/`safety_identifier` ->
  `metadata.user_id`; `service_tier` "auto" -> "auto", "default" -> "standard_only".
- tools -> tools (`parameters` -> `input_schema`, `strict` kept); `tool_choice`
  none/auto/required/named -> none/auto/any/tool; `allowed_tools` -> only the
  allowed tools, auto/any; `parallel_tool_calls: false` -> `disable_parallel_tool_use`.
- `response_format` json_schema -> `output_config.format` (the schema as sent;
  the format's `description` becomes the schema's when it has none).
- `reasoning_effort`, with the route option `thinking` = "budget" (default):
  none -> thinking disabled; minimal/low/medium/high/xhigh/max -> thinking
  enabled with `budget_tokens` 1024/2048/8192/16384/24576/32768. Without a
  client cap, `max_tokens` = default + budget; with one (which in OpenAI's
  terms covers reasoning too) the budget is capped below it, and a cap of 1024
  or less is a 400. With `thinking` = "adaptive" (newer models): none ->
  disabled, low..max -> `{"type": "adaptive"}` + `output_config.effort`, minimal -> 400.

Anthropic -> OpenAI: text blocks -> content; tool_use -> tool_calls (`toolu_` ids
kept); thinking blocks are not content. When a reply has thinking blocks and
tool calls, the thinking blocks ride on the first tool call as
`extra_content: {"anthropic": {"thinking_blocks": [...]}}` and are put back in
front of the `tool_use` blocks when the client sends the message back (Anthropic
requires them during a tool loop with thinking on). stop_reason end_turn/
stop_sequence/pause_turn -> stop, max_tokens/model_context_window_exceeded ->
length, tool_use -> tool_calls, refusal -> content_filter. Usage: prompt =
input + cache creation + cache read tokens, cached = cache read, reasoning =
thinking tokens when reported.

The gateway's own Messages API (`completions/messages`) uses this provider natively too
(`prepare_native`, `native_create`, `native_stream`, `native_count_tokens`): the client's body
and betas go upstream as sent, through the same pooled client and error mapping.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from .. import protocol as p
from ..errors import (
    GatewayError,
    UpstreamError,
    from_upstream_status,
    upstream_failure,
    upstream_timeout,
    upstream_unreachable,
)
from .base import Prepared, Provider, Route, invalid, unsupported, upstream_failures
from .inputs import parse_data_url, parse_tool_arguments

PROVIDER = "anthropic"
DEFAULT_MAX_TOKENS = 4096
MIN_THINKING_BUDGET = 1024
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 24576, "max": 32768}
ADAPTIVE_EFFORTS = ("low", "medium", "high", "xhigh", "max")
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
SERVICE_TIERS = {"auto": "auto", "default": "standard_only"}
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Anthropic's error types, for errors that arrive inside a 200 stream.
ERROR_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
THINKING_BLOCK_TYPES = ("thinking", "redacted_thinking")


# ---- parameters Anthropic can or cannot honour -------------------------------------------


def check_parameters(request: p.ChatCompletionRequest) -> None:
    """Reject a parameter value Anthropic cannot honour (neutral values such as `n: 1` pass)."""
    if request.n is not None and request.n > 1:
        raise unsupported("n", "Anthropic models return one choice per request; `n` must be 1.")
    if request.logprobs:
        raise unsupported("logprobs", "Anthropic models do not return log probabilities; omit `logprobs`.")
    if request.logit_bias:
        raise unsupported("logit_bias", "Anthropic models do not support `logit_bias`.")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(request, name):
            raise unsupported(name, f"Anthropic models do not support `{name}`; omit it or send 0.")
    if request.temperature is not None and request.temperature > 1:
        raise invalid(
            "temperature", f"Anthropic models accept a `temperature` between 0 and 1; got {request.temperature}."
        )
    if request.modalities is not None and any(m != "text" for m in request.modalities):
        raise unsupported("modalities", 'Anthropic models answer in text only; `modalities` must be ["text"].')
    if request.service_tier is not None and request.service_tier not in SERVICE_TIERS:
        raise unsupported(
            "service_tier",
            f"`service_tier` `{request.service_tier}` has no Anthropic equivalent; use `auto` or `default`.",
        )
    if request.tools:
        for i, tool in enumerate(request.tools):
            if not isinstance(tool, p.FunctionTool):
                raise unsupported(f"tools[{i}]", "Anthropic models support function tools only, not custom tools.")
    if isinstance(request.response_format, p.ResponseFormatJsonObject):
        raise unsupported(
            "response_format",
            "Anthropic models cannot be held to free-form JSON; use `response_format` of type `json_schema`.",
        )
    if (
        isinstance(request.response_format, p.ResponseFormatJsonSchema)
        and request.response_format.json_schema.schema_ is None
    ):
        raise invalid("response_format.json_schema.schema", "Anthropic structured output needs a `schema`.")


# ---- messages -------------------------------------------------------------------------------


@dataclass
class Turns:
    """Anthropic's `system` blocks and alternating turns, built message by message."""

    cache: dict[str, Any]
    system: list[dict[str, Any]] = field(default_factory=list)
    turns: list[dict[str, Any]] = field(default_factory=list)

    def add(self, role: str, blocks: list[dict[str, Any]]) -> None:
        """Append blocks as a `role` turn, merging into the previous turn of the same role."""
        if self.turns and self.turns[-1]["role"] == role:
            self.turns[-1]["content"].extend(blocks)
        else:
            self.turns.append({"role": role, "content": list(blocks)})


def cache_control(options: p.PromptCacheOptions | None) -> dict[str, Any]:
    """The `cache_control` a breakpoint gets; OpenAI's TTL is a minimum, so 30m needs Anthropic's 1h."""
    if options is not None and options.ttl not in (None, "30m"):
        raise invalid("prompt_cache_options.ttl", f"Unsupported prompt cache TTL `{options.ttl}`; use `30m`.")
    if options is not None and options.ttl == "30m":
        return {"type": "ephemeral", "ttl": "1h"}
    return {"type": "ephemeral"}


def _with_cache(block: dict[str, Any], part: Any, cache: dict[str, Any]) -> dict[str, Any]:
    if getattr(part, "prompt_cache_breakpoint", None) is not None:
        block["cache_control"] = dict(cache)
    return block


def text_blocks(
    content: str | list[p.TextPart], cache: dict[str, Any], keep_empty: bool = True
) -> list[dict[str, Any]]:
    """Text content (a string or text parts) as Anthropic text blocks."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content or keep_empty else []
    return [
        _with_cache({"type": "text", "text": part.text}, part, cache) for part in content if part.text or keep_empty
    ]


def image_block(part: p.ImagePart, where: str, cache: dict[str, Any]) -> dict[str, Any]:
    """An image part as an image block (base64 for data URLs, url source for http(s))."""
    if part.image_url.detail == "low":
        raise unsupported(
            f"{where}.image_url.detail",
            "Anthropic models read images at full resolution; `detail: low` is not supported.",
        )
    url, param = part.image_url.url, f"{where}.image_url.url"
    if url.startswith("data:"):
        data_url = parse_data_url(url, param)
        if not data_url.is_base64:
            raise invalid(param, "An image data URL must be base64: `data:image/png;base64,...`.")
        if data_url.mime not in IMAGE_MEDIA_TYPES:
            raise invalid(
                param, f"Anthropic models accept images of type {', '.join(IMAGE_MEDIA_TYPES)}; got `{data_url.mime}`."
            )
        source: dict[str, Any] = {"type": "base64", "media_type": data_url.mime, "data": data_url.data}
    elif url.startswith(("http://", "https://")):
        source = {"type": "url", "url": url}
    else:
        raise invalid(param, "An image URL must be an http(s) URL or a base64 data URL.")
    return _with_cache({"type": "image", "source": source}, part, cache)


def file_block(part: p.FilePart, where: str, cache: dict[str, Any]) -> dict[str, Any]:
    """A file part (PDF or plain text sent inline) as a document block."""
    ref = part.file
    if ref.file_data is None:
        raise unsupported(
            f"{where}.file.file_id", "Anthropic cannot read OpenAI file ids; send the file as `file_data`."
        )
    param = f"{where}.file.file_data"
    # A data: URL tells the type; bare base64 is taken for a PDF.
    data_url = parse_data_url(ref.file_data, param) if ref.file_data.startswith("data:") else None
    media_type = data_url.mime if data_url is not None else "application/pdf"
    if media_type == "application/pdf":
        if data_url is None:
            data = ref.file_data
        elif data_url.is_base64:
            data = data_url.data
        else:  # percent-encoded bytes; Anthropic takes base64
            data = base64.b64encode(data_url.bytes(param)).decode()
        source: dict[str, Any] = {"type": "base64", "media_type": media_type, "data": data}
    elif media_type == "text/plain" and data_url is not None:
        try:
            text = data_url.bytes(param).decode("utf-8")
        except UnicodeDecodeError:
            raise invalid(param, "The text file is not valid UTF-8.") from None
        source = {"type": "text", "media_type": media_type, "data": text}
    else:
        raise unsupported(param, f"Anthropic models read PDF and plain-text files; got `{media_type}`.")
    block: dict[str, Any] = {"type": "document", "source": source}
    if ref.filename:
        block["title"] = ref.filename
    return _with_cache(block, part, cache)


def user_blocks(message: p.UserMessage, where: str, cache: dict[str, Any]) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return [{"type": "text", "text": message.content}]
    blocks = []
    for j, part in enumerate(message.content):
        at = f"{where}.content[{j}]"
        if isinstance(part, p.TextPart):
            blocks.append(_with_cache({"type": "text", "text": part.text}, part, cache))
        elif isinstance(part, p.ImagePart):
            blocks.append(image_block(part, at, cache))
        elif isinstance(part, p.FilePart):
            blocks.append(file_block(part, at, cache))
        else:
            raise unsupported(at, "Anthropic models do not accept audio input.")
    return blocks


def tool_use_block(call: p.ToolCall, where: str) -> dict[str, Any]:
    """An assistant's function call as a `tool_use` block with its arguments decoded."""
    if not isinstance(call, p.FunctionToolCall):
        raise unsupported(where, "Anthropic models support function tool calls only, not custom ones.")
    arguments = parse_tool_arguments(call.function.arguments, f"{where}.function.arguments")
    return {"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments}


def carried_thinking(call: p.ToolCall, where: str) -> list[dict[str, Any]]:
    """Thinking blocks a previous reply attached to this tool call (`extra_content.anthropic`)."""
    extra = getattr(call, "extra_content", None) or {}
    blocks = (extra.get("anthropic") or {}).get("thinking_blocks") if isinstance(extra, dict) else None
    if blocks is None:
        return []
    if not isinstance(blocks, list) or not all(
        isinstance(b, dict) and b.get("type") in THINKING_BLOCK_TYPES for b in blocks
    ):
        raise invalid(
            f"{where}.extra_content.anthropic.thinking_blocks", "Send the thinking blocks back exactly as received."
        )
    return blocks


def assistant_blocks(message: p.AssistantMessage, where: str, cache: dict[str, Any]) -> list[dict[str, Any]]:
    """An assistant message: carried thinking, then its text (and refusal), then its tool calls."""
    if message.audio is not None:
        raise unsupported(f"{where}.audio", "Anthropic models cannot take audio replies back as input.")
    if message.function_call is not None:
        raise unsupported(
            f"{where}.function_call", "Use `tool_calls`; the deprecated `function_call` is not supported."
        )
    thinking: list[dict[str, Any]] = []
    blocks: list[dict[str, Any]] = []
    if isinstance(message.content, str):
        blocks += text_blocks(message.content, cache, keep_empty=False)
    elif message.content is not None:
        for part in message.content:
            if isinstance(part, p.TextPart):
                blocks += text_blocks([part], cache, keep_empty=False)
            elif part.refusal:
                blocks.append({"type": "text", "text": part.refusal})
    if message.refusal:
        blocks.append({"type": "text", "text": message.refusal})
    for k, call in enumerate(message.tool_calls or []):
        at = f"{where}.tool_calls[{k}]"
        thinking += carried_thinking(call, at)
        blocks.append(tool_use_block(call, at))
    return thinking + blocks


def tool_result_block(message: p.ToolMessage, cache: dict[str, Any]) -> dict[str, Any]:
    content: Any = message.content if isinstance(message.content, str) else text_blocks(message.content, cache)
    return {"type": "tool_result", "tool_use_id": message.tool_call_id, "content": content}


def convert_messages(request: p.ChatCompletionRequest, cache: dict[str, Any]) -> Turns:
    """The OpenAI history as Anthropic's `system` and merged turns."""
    out = Turns(cache=cache)
    for i, message in enumerate(request.messages):
        where = f"messages[{i}]"
        if isinstance(message, p.FunctionMessage):
            raise unsupported(f"{where}.role", "Use `tool` messages; the deprecated `function` role is not supported.")
        if getattr(message, "name", None) is not None:
            raise unsupported(f"{where}.name", "Anthropic models do not support participant `name`s on messages.")
        if isinstance(message, (p.SystemMessage, p.DeveloperMessage)):
            out.system += text_blocks(message.content, cache, keep_empty=False)
        elif isinstance(message, p.UserMessage):
            out.add("user", user_blocks(message, where, cache))
        elif isinstance(message, p.AssistantMessage):
            out.add("assistant", assistant_blocks(message, where, cache))
        else:
            out.add("user", [tool_result_block(message, cache)])
    return out


# ---- tools, reasoning, output format --------------------------------------------------------


def tool_param(fn: p.FunctionDefinition) -> dict[str, Any]:
    tool: dict[str, Any] = {"name": fn.name, "input_schema": fn.parameters or {"type": "object", "properties": {}}}
    if fn.description is not None:
        tool["description"] = fn.description
    if fn.strict is not None:
        tool["strict"] = fn.strict
    return tool


def tools_and_choice(request: p.ChatCompletionRequest) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None]:
    """Anthropic `tools` and `tool_choice` for the request's tools, choice and parallel_tool_calls."""
    if not request.tools:
        return None, None
    functions = [t.function for t in request.tools if isinstance(t, p.FunctionTool)]
    choice = request.tool_choice
    out: dict[str, Any] | None
    if choice is None:
        out = None
    elif choice == "none":
        out = {"type": "none"}
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, p.NamedToolChoice):
        out = {"type": "tool", "name": choice.function.name}
    elif isinstance(choice, p.AllowedToolsChoice):
        functions = allowed_functions(functions, choice)
        out = {"type": "auto" if choice.allowed_tools.mode == "auto" else "any"}
    else:
        raise unsupported("tool_choice", "Anthropic models support function tools only, not custom ones.")
    if request.parallel_tool_calls is False and (out is None or out["type"] != "none"):
        out = {**(out or {"type": "auto"}), "disable_parallel_tool_use": True}
    return [tool_param(fn) for fn in functions], out


def allowed_functions(
    functions: list[p.FunctionDefinition], choice: p.AllowedToolsChoice
) -> list[p.FunctionDefinition]:
    """The tools an `allowed_tools` choice leaves to the model (all must be known function tools)."""
    names: list[str] = []
    for k, entry in enumerate(choice.allowed_tools.tools):
        name = (entry.get("function") or {}).get("name") if entry.get("type") == "function" else None
        if not isinstance(name, str) or name not in {fn.name for fn in functions}:
            raise invalid(
                f"tool_choice.allowed_tools.tools[{k}]", "Each allowed tool must name one of the function `tools`."
            )
        names.append(name)
    return [fn for fn in functions if fn.name in names]


def reasoning_params(request: p.ChatCompletionRequest, mode: str) -> tuple[dict[str, Any] | None, int, str | None]:
    """(thinking, budget tokens, adaptive effort) for `reasoning_effort` (see the module docstring)."""
    effort = request.reasoning_effort
    if effort is None:
        return None, 0, None
    if effort == "none":
        return {"type": "disabled"}, 0, None
    if mode == "adaptive":
        if effort not in ADAPTIVE_EFFORTS:
            raise unsupported(
                "reasoning_effort", f"`reasoning_effort` `{effort}` has no Anthropic effort level; use low to max."
            )
        return {"type": "adaptive"}, 0, effort
    budget = THINKING_BUDGETS[effort]
    cap = request.output_limit
    if cap is not None:
        if cap <= MIN_THINKING_BUDGET:
            param = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
            raise invalid(
                param,
                f"With `reasoning_effort`, Anthropic needs room for at least {MIN_THINKING_BUDGET} thinking tokens: "
                f"`{param}` must be above {MIN_THINKING_BUDGET}.",
            )
        budget = min(budget, cap - 1)
    return {"type": "enabled", "budget_tokens": budget}, budget, None


def output_format(response_format: Any) -> dict[str, Any] | None:
    """`output_config.format` for a json_schema response format."""
    if not isinstance(response_format, p.ResponseFormatJsonSchema):
        return None
    spec = response_format.json_schema
    schema = dict(spec.schema_ or {})
    if spec.description and "description" not in schema:
        schema["description"] = spec.description
    return {"type": "json_schema", "schema": schema}


# ---- the whole request ------------------------------------------------------------------------


def build_params(request: p.ChatCompletionRequest, route: Route) -> dict[str, Any]:
    """The keyword arguments of `messages.create()` for `request` (without `stream`)."""
    check_parameters(request)
    options = request.prompt_cache_options
    cache = cache_control(options)
    history = convert_messages(request, cache)
    thinking, budget, effort = reasoning_params(request, str(route.options.get("thinking", "budget")))
    default = int(route.options.get("default_max_tokens", DEFAULT_MAX_TOKENS))
    limit = request.output_limit
    params: dict[str, Any] = {
        "model": route.upstream_model,
        "max_tokens": limit if limit is not None else default + budget,
        "messages": history.turns,
    }
    if history.system:
        params["system"] = history.system
    if request.stop_sequences:
        params["stop_sequences"] = request.stop_sequences
    tools, choice = tools_and_choice(request)
    if tools is not None:
        params["tools"] = tools
    if choice is not None:
        params["tool_choice"] = choice
    if thinking is not None:
        params["thinking"] = thinking
    output_config = {k: v for k, v in (("effort", effort), ("format", output_format(request.response_format))) if v}
    if output_config:
        params["output_config"] = output_config
    end_user = request.safety_identifier or request.user
    if end_user:
        params["metadata"] = {"user_id": end_user}
    if request.service_tier is not None:
        params["service_tier"] = SERVICE_TIERS[request.service_tier]
    if options is not None and (options.mode or "implicit") == "implicit":
        params["cache_control"] = dict(cache)
    sampling = {k: getattr(request, k) for k in ("temperature", "top_p") if getattr(request, k) is not None}
    if sampling:
        params["extra_body"] = sampling  # anthropic 2.12's create() has no such parameters
    return params


# ---- answers -----------------------------------------------------------------------------------


def finish_reason(stop_reason: str | None) -> str:
    return FINISH_REASONS.get(stop_reason or "end_turn", "stop")


def convert_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI usage from Anthropic's: every input token (cached or not) is a prompt token."""
    cache_write = usage.get("cache_creation_input_tokens") or 0
    cache_read = usage.get("cache_read_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + cache_write + cache_read
    details = usage.get("output_tokens_details") or {}
    reasoning = details.get("thinking_tokens") if isinstance(details, dict) else None
    return p.usage(prompt, usage.get("output_tokens") or 0, reasoning=reasoning, cached=cache_read)


def tool_call(block: dict[str, Any], thinking: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {
        "id": block["id"],
        "type": "function",
        "function": {"name": block["name"], "arguments": orjson.dumps(block.get("input") or {}).decode()},
    }
    if thinking:
        call["extra_content"] = {"anthropic": {"thinking_blocks": thinking}}
    return call


def thinking_block(block: dict[str, Any]) -> dict[str, Any]:
    """A thinking block reduced to what Anthropic takes back."""
    if block["type"] == "redacted_thinking":
        return {"type": "redacted_thinking", "data": block.get("data", "")}
    return {"type": "thinking", "thinking": block.get("thinking", ""), "signature": block.get("signature", "")}


def convert_message(message: dict[str, Any], model: str) -> dict[str, Any]:
    """A `CreateChatCompletionResponse` from an Anthropic `Message` (as a dict)."""
    texts: list[str] = []
    thinking: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind in THINKING_BLOCK_TYPES:
            thinking.append(thinking_block(block))
        elif kind == "tool_use":
            calls.append(tool_call(block, thinking if not calls else None))
    content = "".join(texts) if texts or not calls else None
    msg = p.message(content, tool_calls=calls or None)
    choices = [p.choice(0, msg, finish_reason(message.get("stop_reason")))]
    return p.completion(p.new_completion_id(), p.now(), model, choices, convert_usage(message.get("usage") or {}))


@dataclass
class StreamTranslator:
    """Turns Anthropic stream events (dicts), one at a time, into OpenAI chunks (`base.StreamTranslator`)."""

    chunks: p.ChunkFactory
    usage: dict[str, Any] = field(default_factory=dict)
    kinds: dict[int, str] = field(default_factory=dict)  # Anthropic block index -> text/tool/thinking/other
    tool_index: dict[int, int] = field(default_factory=dict)  # Anthropic block index -> OpenAI tool call index
    thinking: dict[int, dict[str, Any]] = field(default_factory=dict)
    started: bool = False
    reason: str | None = None  # the OpenAI finish reason, once message_delta told it

    def _delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        if not self.started:
            self.started = True
            delta = {"role": "assistant", **delta}
        return self.chunks.delta(0, delta)

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks one event produces (often none)."""
        kind = event.get("type")
        if kind == "message_start":
            self._add_usage((event.get("message") or {}).get("usage"))
            return [self._delta({"content": ""})] if not self.started else []
        if kind == "content_block_start":
            return self._block_start(event["index"], event.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(event["index"], event.get("delta") or {})
        if kind == "message_delta":
            self._add_usage(event.get("usage"))
            reason = (event.get("delta") or {}).get("stop_reason")
            if reason is not None and self.reason is None:
                self.reason = finish_reason(reason)
                out = [] if self.started else [self._delta({"content": ""})]
                return [*out, self.chunks.delta(0, {}, finish_reason=self.reason)]
        return []  # content_block_stop, message_stop, ping and unknown events

    def _block_start(self, index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
        kind = block.get("type")
        if kind == "text":
            self.kinds[index] = "text"
            return [self._delta({"content": block["text"]})] if block.get("text") else []
        if kind == "tool_use":
            self.kinds[index] = "tool"
            position = self.tool_index[index] = len(self.tool_index)
            head: dict[str, Any] = {
                "index": position,
                "id": block["id"],
                "type": "function",
                "function": {"name": block["name"], "arguments": ""},
            }
            if position == 0 and self.thinking:
                head["extra_content"] = {
                    "anthropic": {"thinking_blocks": [thinking_block(b) for b in self.thinking.values()]}
                }
            return [self._delta({"tool_calls": [head]})]
        if kind in THINKING_BLOCK_TYPES:
            self.kinds[index] = "thinking"
            self.thinking[index] = dict(block)
        else:
            self.kinds[index] = "other"
        return []

    def _block_delta(self, index: int, delta: dict[str, Any]) -> list[dict[str, Any]]:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [self._delta({"content": delta["text"]})]
        if kind == "input_json_delta" and delta.get("partial_json") and index in self.tool_index:
            fragment = {"index": self.tool_index[index], "function": {"arguments": delta["partial_json"]}}
            return [self._delta({"tool_calls": [fragment]})]
        if kind == "thinking_delta" and index in self.thinking:
            self.thinking[index]["thinking"] = self.thinking[index].get("thinking", "") + delta.get("thinking", "")
        elif kind == "signature_delta" and index in self.thinking:
            self.thinking[index]["signature"] = self.thinking[index].get("signature", "") + delta.get("signature", "")
        return []

    def _add_usage(self, usage: dict[str, Any] | None) -> None:
        """Anthropic's stream usage is cumulative: the latest value of each field wins."""
        for key, value in (usage or {}).items():
            if value is not None:
                self.usage[key] = value

    def finish(self) -> list[dict[str, Any]]:
        """The closing usage chunk; an upstream stream that never finished is an error."""
        if self.reason is None:
            raise UpstreamError(
                f"The {PROVIDER} upstream ended the stream before the message was complete.",
                code="upstream_incomplete_stream",
            )
        return [self.chunks.usage(convert_usage(self.usage))]


# ---- errors --------------------------------------------------------------------------------------


def upstream_error(exc: Exception) -> GatewayError | None:
    """Anthropic's one mapping of upstream failures: API errors by status code (never by SDK class),
    transport failures by kind; None for anything that is not an upstream failure."""
    import anthropic
    import httpx2

    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        in_stream = status < 400  # an `error` event inside a 200 stream
        if in_stream:
            status = ERROR_TYPE_STATUS.get(str(exc.type), 502)
        message = exc.api_message or f"HTTP {exc.status_code}"
        retry_after = None if in_stream else exc.response.headers.get("retry-after")
        return from_upstream_status(status, message, provider=PROVIDER, retry_after=retry_after)
    if isinstance(exc, (anthropic.APITimeoutError, httpx2.TimeoutException)):
        return upstream_timeout(PROVIDER, "no data within the read timeout")
    if isinstance(exc, anthropic.APIConnectionError):
        cause = exc.__cause__
        return upstream_unreachable(PROVIDER, type(cause).__name__ if cause else "connection error")
    if isinstance(exc, httpx2.TransportError):  # a cut mid-stream is the HTTP library's, not the SDK's
        return upstream_unreachable(PROVIDER, f"the connection broke mid-stream ({type(exc).__name__})")
    if isinstance(exc, (anthropic.APIError, httpx2.HTTPError, httpx2.StreamError)):
        return upstream_failure(
            f"The {PROVIDER} upstream sent an answer the gateway could not read ({type(exc).__name__})."
        )
    return None


# ---- I/O -----------------------------------------------------------------------------------------


class AnthropicProvider(Provider):
    name = PROVIDER
    keeps_tool_state = True  # thinking blocks
    supported_params = frozenset(
        {
            "temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens", "presence_penalty",
            "frequency_penalty", "logit_bias", "logprobs", "tools", "tool_choice", "parallel_tool_calls",
            "response_format", "reasoning_effort", "service_tier", "modalities", "prompt_cache_options",
        }
    )  # fmt: skip

    def __init__(self, route: Route) -> None:
        super().__init__(route)
        self._client: Any = None

    def translate(self, request: p.ChatCompletionRequest) -> dict[str, Any]:
        return build_params(request, self.route)

    def client(self) -> Any:
        """The pooled `AsyncAnthropic` client, created on first use with the key from the environment."""
        if self._client is None:
            from anthropic import AsyncAnthropic, Timeout

            route = self.route
            key = dataclasses.replace(route, api_key_env=route.api_key_env or "ANTHROPIC_API_KEY").require_credential()
            read = max(route.first_byte_timeout, route.idle_timeout) + 5
            kwargs: dict[str, Any] = {
                "api_key": key,
                "max_retries": 0,
                "timeout": Timeout(read, connect=route.connect_timeout),
            }
            if route.base_url:
                kwargs["base_url"] = route.base_url  # else the SDK honours ANTHROPIC_BASE_URL
            self._client = AsyncAnthropic(**kwargs)
        return self._client

    async def complete(self, prepared: Prepared[dict[str, Any]]) -> dict[str, Any]:
        client = self.client()
        with upstream_failures(upstream_error):
            message = await client.messages.create(**prepared.payload)
        return convert_message(message.model_dump(), self.route.upstream_model)

    def stream(self, prepared: Prepared[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """Take the client now (a missing credential's 503 raises here); events flow from the generator."""
        return self._events(self.client(), prepared.payload)

    async def _events(self, client: Any, params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        translator = StreamTranslator(p.ChunkFactory(self.route.upstream_model))
        with upstream_failures(upstream_error):
            upstream = await client.messages.create(**params, stream=True)
        async with upstream:  # closes the upstream HTTP stream however this generator ends
            with upstream_failures(upstream_error):
                async for event in upstream:
                    for chunk in translator.feed(event.model_dump()):
                        yield chunk
        for chunk in translator.finish():
            yield chunk

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    # ---- Anthropic's Messages API, natively (the gateway's /v1/messages on an Anthropic route) ----

    def prepare_native(
        self, request: p.ChatCompletionRequest, body: dict[str, Any], headers: dict[str, str]
    ) -> Prepared[NativeMessages]:
        """A Messages request as the client sent it (`cache_control`, thinking, betas intact), for this
        route's model; `request` is its chat translation, which the limits and the log count with."""
        native = {k: v for k, v in body.items() if k != "stream"}
        native["model"] = self.route.upstream_model
        return Prepared(request, NativeMessages(native, dict(headers)))

    async def native_create(self, prepared: Prepared[NativeMessages]) -> dict[str, Any]:
        """The upstream's `Message`, as it sent it."""
        client = self.client()
        with upstream_failures(upstream_error):
            raw = await client.messages.with_raw_response.create(**prepared.payload.arguments())
            message = await raw.json()
        if not isinstance(message, dict):
            raise upstream_failure(f"The {PROVIDER} upstream answered something that is not a message.")
        return message

    def native_stream(self, prepared: Prepared[NativeMessages]) -> AsyncIterator[dict[str, Any]]:
        """The upstream's stream events (as dicts), pings aside; a missing credential raises here."""
        return self._native_events(self.client(), prepared.payload)

    async def _native_events(self, client: Any, native: NativeMessages) -> AsyncIterator[dict[str, Any]]:
        with upstream_failures(upstream_error):
            upstream = await client.messages.create(**native.arguments(), stream=True)
        async with upstream:
            with upstream_failures(upstream_error):
                async for event in upstream:
                    yield event.to_dict(mode="json")

    async def native_count_tokens(self, prepared: Prepared[NativeMessages]) -> int:
        """The upstream's own count of the request's input tokens."""
        client = self.client()
        body = {k: v for k, v in prepared.payload.body.items() if k not in NOT_COUNTED}
        with upstream_failures(upstream_error):
            counted = await client.messages.count_tokens(
                model=body["model"], messages=body["messages"], extra_body=body, extra_headers=prepared.payload.headers
            )
        return int(counted.input_tokens)


# Parameters of a Messages request that count_tokens does not take.
NOT_COUNTED = frozenset(
    {"max_tokens", "stream", "stop_sequences", "temperature", "top_p", "top_k", "metadata", "service_tier"}
)


@dataclass(frozen=True)
class NativeMessages:
    """A Messages request body for the upstream (model rewritten, no `stream`) and the client's
    `anthropic-version` / `anthropic-beta` headers, forwarded."""

    body: dict[str, Any]
    headers: dict[str, str]

    def arguments(self) -> dict[str, Any]:
        """`messages.create()` arguments: the required ones, and the whole body as sent (it wins)."""
        body = self.body
        return {
            "model": body["model"],
            "max_tokens": body["max_tokens"],
            "messages": body["messages"],
            "extra_body": body,
            "extra_headers": self.headers,
        }


__all__ = [
    "AnthropicProvider",
    "NativeMessages",
    "StreamTranslator",
    "build_params",
    "convert_message",
    "upstream_error",
]
