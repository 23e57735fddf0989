"""Pure translation between Anthropic's Messages API and the gateway's chat steps.

Requests (`to_chat`): a Messages request becomes a `ChatCompletionRequest` that every provider
takes, plus the list of what such a route cannot honour (`Translated.problems`: the first is the
client's 400 on a route that is not Anthropic's; an Anthropic route takes the request natively).

- `system` (a string or text blocks) and `role: "system"` turns inside `messages` -> system
  messages, in place; text blocks of one turn are joined with blank lines.
- user turns: text, images (base64 -> data URL, URL -> URL), documents (PDF base64 -> a file part,
  plain text and content sources -> text); `tool_result` blocks -> `tool` messages placed first
  (as Chat Completions requires them right after the calls), `is_error` -> "Error: " before the
  text, images inside a result -> image parts of the user message that follows. A repeated
  `tool_result` for the same `tool_use_id` is dropped (the first counts).
- assistant turns: text -> content, `tool_use` -> `tool_calls` (input as JSON arguments);
  `thinking`/`redacted_thinking` blocks are not sent to other providers.
- `cache_control` (anywhere), `context_management`, `speed`, `inference_geo`, `diagnostics`,
  `user_profile_id`, `workspace_id`, `defer_loading` and the other tool hints: ignored.
- `max_tokens` -> max_tokens; `stop_sequences` -> stop (at most 4); `temperature`, `top_p`;
  `metadata.user_id` -> user; `tools` -> function tools (`input_schema` -> parameters, `strict`);
  `tool_choice` auto/any/tool/none -> auto/required/named/none, `disable_parallel_tool_use` ->
  `parallel_tool_calls: false`; `thinking` enabled -> `reasoning_effort` by budget (below 4096
  low, below 16384 medium, else high), `output_config.effort` -> `reasoning_effort` (adaptive or
  unset thinking; `disabled` turns reasoning off by sending none); `output_config.format` ->
  `response_format` json_schema; `service_tier` standard_only -> default.
- Not honoured off Anthropic (the 400 names the field): `top_k`, server tools, `container`,
  `mcp_servers`, image/document `file` sources, document URLs, more than 4 stop sequences,
  `max_tokens: 0`, block types only Anthropic knows, tool names Chat Completions can't carry.

Gemini's thought signatures (and any `extra_content` a provider puts on a tool call) ride inside
the `tool_use` id (`<call id>__gw_<base64url JSON>`) and come back from it, so tool loops with
thinking Gemini models work through Anthropic-shaped clients that keep ids but not extras.

Answers (`to_message`) and streams (`MessagesSSE`, a `relay.StreamDialect`) come back in
Anthropic's exact shapes; finish reasons stop/length/tool_calls/content_filter -> end_turn/
max_tokens/tool_use/refusal (stop_sequence when the upstream says which sequence matched).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from .. import protocol as p
from ..errors import GatewayError, InvalidRequest, upstream_failure
from ..tokens import count_prompt, count_tokens
from . import envelope
from . import protocol as m

CHAT_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_STOP_SEQUENCES = 4
ID_MARK = "__gw_"
FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Chat parameters a provider may refuse, and the Messages field each one came from.
CHAT_TO_MESSAGES = {
    "max_tokens": "max_tokens",
    "stop": "stop_sequences",
    "temperature": "temperature",
    "top_p": "top_p",
    "user": "metadata.user_id",
    "tools": "tools",
    "tool_choice": "tool_choice",
    "parallel_tool_calls": "tool_choice.disable_parallel_tool_use",
    "response_format": "output_config.format",
    "service_tier": "service_tier",
}


@dataclass(frozen=True)
class Problem:
    """Something only an Anthropic route honours: the field, and why."""

    param: str
    message: str

    def error(self) -> InvalidRequest:
        return InvalidRequest(f"{self.param}: {self.message}", param=self.param, code="unsupported_parameter")


@dataclass
class Translated:
    """A Messages request as the chat steps take it."""

    chat: p.ChatCompletionRequest
    problems: list[Problem]
    origins: list[str]  # per chat message, where it came from (`system`, `messages[3]`)
    reasoning_from: str = "thinking"

    def reword(self, exc: InvalidRequest) -> InvalidRequest:
        """A provider's 400 about a chat parameter, about the Messages field it came from instead."""
        param = self.origin_of(exc.param or "")
        message = exc.message
        if param and not message.startswith(param):
            message = f"{param}: {message}"
        return InvalidRequest(message, param=param or None, code=exc.code, headers=exc.headers)

    def origin_of(self, chat_param: str) -> str:
        if not chat_param:
            return ""
        match = re.match(r"^messages\[(\d+)\]", chat_param)
        if match:
            index = int(match.group(1))
            return self.origins[index] if index < len(self.origins) else "messages"
        head = re.split(r"[.\[]", chat_param, maxsplit=1)[0]
        if head == "reasoning_effort":
            return self.reasoning_from
        return CHAT_TO_MESSAGES.get(head, head)


# ---- tool ids ----------------------------------------------------------------------------------


def tool_use_id(call_id: str | None, extra: Any = None) -> str:
    """The `tool_use` id for a chat tool call, carrying its `extra_content` (thought signatures)."""
    base = call_id or p.random_id("toolu_")
    if not isinstance(extra, dict) or not extra or ID_MARK in base:
        return base
    packed = base64.urlsafe_b64encode(orjson.dumps(extra)).decode().rstrip("=")
    return f"{base}{ID_MARK}{packed}"


def split_tool_use_id(value: str) -> tuple[str, dict[str, Any] | None]:
    """(chat call id, extra_content) from a `tool_use` id made by `tool_use_id`."""
    base, mark, packed = value.partition(ID_MARK)
    if not mark or not base:
        return value, None
    try:
        extra = orjson.loads(base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return value, None
    return (base, extra) if isinstance(extra, dict) else (value, None)


# ---- requests ------------------------------------------------------------------------------------


def joined(texts: list[str]) -> str:
    return "\n\n".join(t for t in texts if t)


def system_text(content: str | list[m.TextBlock] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return joined([block.text for block in content])


@dataclass
class _History:
    """The chat messages built turn by turn, with where each came from and what can't be sent."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    called: set[str] = field(default_factory=set)  # tool_use ids the assistant made so far
    answered: set[str] = field(default_factory=set)  # tool_use ids already given a result

    def add(self, message: dict[str, Any], origin: str) -> None:
        self.messages.append(message)
        self.origins.append(origin)

    def refuse(self, param: str, message: str) -> None:
        self.problems.append(Problem(param, message))


def image_part(block: m.ImageBlock, where: str, history: _History) -> dict[str, Any] | None:
    source = block.source
    if isinstance(source, m.Base64ImageSource):
        return {"type": "image_url", "image_url": {"url": f"data:{source.media_type};base64,{source.data}"}}
    if isinstance(source, m.URLSource):
        return {"type": "image_url", "image_url": {"url": source.url}}
    history.refuse(f"{where}.source", "images by Files API `file_id` are only supported on Anthropic models.")
    return None


def document_parts(block: m.DocumentBlock, where: str, history: _History) -> list[dict[str, Any]]:
    source = block.source
    if isinstance(source, m.Base64PDFSource):
        ref: dict[str, Any] = {"file_data": f"data:application/pdf;base64,{source.data}"}
        if block.title:
            ref["filename"] = block.title
        return [{"type": "file", "file": ref}]
    if isinstance(source, m.PlainTextSource):
        return [{"type": "text", "text": joined([block.title or "", source.data])}]
    if isinstance(source, m.ContentSource):
        if isinstance(source.content, str):
            return [{"type": "text", "text": source.content}]
        parts: list[dict[str, Any]] = []
        for k, inner in enumerate(source.content):
            if isinstance(inner, m.TextBlock):
                parts.append({"type": "text", "text": inner.text})
            else:
                image = image_part(inner, f"{where}.source.content[{k}]", history)
                if image is not None:
                    parts.append(image)
        return parts
    kind = "URL" if isinstance(source, m.URLSource) else "Files API `file_id`"
    history.refuse(f"{where}.source", f"documents by {kind} are only supported on Anthropic models; send base64.")
    return []


def other_block_text(block: m.OtherBlock, where: str, history: _History) -> str | None:
    """The text of a block Chat Completions has no type for, when it has a faithful one."""
    extra = block.model_extra or {}
    if block.type == "tool_reference" and isinstance(extra.get("tool_name"), str):
        return f"Tool `{extra['tool_name']}` is available."
    if block.type == "search_result":
        texts = [c.get("text", "") for c in extra.get("content") or [] if isinstance(c, dict)]
        return joined([str(extra.get("title") or ""), str(extra.get("source") or ""), *texts])
    history.refuse(f"{where}.type", f"`{block.type}` blocks are only supported on Anthropic models.")
    return None


def tool_result_content(block: m.ToolResultBlock, where: str, history: _History, media: list[dict[str, Any]]) -> str:
    """The text of a tool result; its images and PDFs go to `media` (the user message after)."""
    content = block.content
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        texts: list[str] = []
        for k, inner in enumerate(content):
            at = f"{where}.content[{k}]"
            if isinstance(inner, m.TextBlock):
                texts.append(inner.text)
            elif isinstance(inner, m.ImageBlock):
                image = image_part(inner, at, history)
                if image is not None:
                    media.append(image)
            elif isinstance(inner, m.DocumentBlock):
                for part in document_parts(inner, at, history):
                    if part["type"] == "text":
                        texts.append(part["text"])
                    else:
                        media.append(part)
            else:
                texts.append(other_block_text(inner, at, history) or "")
        text = "\n".join(t for t in texts if t)
    return f"Error: {text}" if block.is_error else text


def user_turn(message: m.UserMessage, where: str, history: _History) -> None:
    """Tool results first (as `tool` messages), then the rest of the turn as one user message."""
    if isinstance(message.content, str):
        history.add({"role": "user", "content": message.content}, where)
        return
    parts: list[dict[str, Any]] = []
    media: list[dict[str, Any]] = []
    for j, block in enumerate(message.content):
        at = f"{where}.content[{j}]"
        if isinstance(block, m.ToolResultBlock):
            call_id, _ = split_tool_use_id(block.tool_use_id)
            if block.tool_use_id not in history.called:
                history.refuse(f"{at}.tool_use_id", f"no earlier `tool_use` block has the id `{block.tool_use_id}`.")
                continue
            if block.tool_use_id in history.answered:
                continue  # a repeated result for the same call: the first one counts
            history.answered.add(block.tool_use_id)
            content = tool_result_content(block, at, history, media)
            history.add({"role": "tool", "tool_call_id": call_id, "content": content}, at)
        elif isinstance(block, m.TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, m.ImageBlock):
            image = image_part(block, at, history)
            if image is not None:
                parts.append(image)
        elif isinstance(block, m.DocumentBlock):
            parts += document_parts(block, at, history)
        elif isinstance(block, m.OtherBlock):
            text = other_block_text(block, at, history)
            if text:
                parts.append({"type": "text", "text": text})
        elif isinstance(block, m.ToolUseBlock):
            history.refuse(f"{at}.type", "`tool_use` blocks belong in assistant turns.")
        # thinking blocks in a user turn carry nothing a model could use: dropped
    parts += media
    if not parts:
        return
    if all(part["type"] == "text" for part in parts):
        history.add({"role": "user", "content": joined([part["text"] for part in parts])}, where)
    else:
        history.add({"role": "user", "content": parts}, where)


def assistant_turn(message: m.AssistantMessage, where: str, history: _History) -> None:
    if isinstance(message.content, str):
        history.add({"role": "assistant", "content": message.content}, where)
        return
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(message.content):
        at = f"{where}.content[{j}]"
        if isinstance(block, m.TextBlock):
            texts.append(block.text)
        elif isinstance(block, m.ToolUseBlock):
            history.called.add(block.id)
            call_id, extra = split_tool_use_id(block.id)
            call: dict[str, Any] = {
                "id": call_id,
                "type": "function",
                "function": {"name": block.name, "arguments": orjson.dumps(block.input).decode()},
            }
            if extra is not None:
                call["extra_content"] = extra
            calls.append(call)
        elif isinstance(block, m.OtherBlock):
            history.refuse(f"{at}.type", f"`{block.type}` blocks are only supported on Anthropic models.")
        elif not isinstance(block, (m.ThinkingBlock, m.RedactedThinkingBlock)):
            history.refuse(f"{at}.type", f"`{block.type}` blocks belong in user turns.")
    text = "".join(texts)
    out: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        out["tool_calls"] = calls
    history.add(out, where)


def chat_tools(request: m.CountTokensRequest, problems: list[Problem]) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = []
    for i, tool in enumerate(request.tools or []):
        if isinstance(tool, m.ServerTool):
            problems.append(Problem(f"tools[{i}].type", f"`{tool.type}` is a tool only Anthropic models provide."))
            continue
        if not CHAT_NAME.match(tool.name):
            problems.append(
                Problem(f"tools[{i}].name", "this model takes tool names of 1 to 64 letters, digits, `_` or `-`.")
            )
            continue
        fn: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
        if tool.description is not None:
            fn["description"] = tool.description
        if tool.strict is not None:
            fn["strict"] = tool.strict
        tools.append({"type": "function", "function": fn})
    return tools


def chat_tool_choice(choice: m.ToolChoice | None) -> tuple[Any, bool]:
    """(chat tool_choice, whether parallel tool use is disabled)."""
    if choice is None:
        return None, False
    if isinstance(choice, m.ToolChoiceNone):
        return "none", False
    parallel_off = bool(choice.disable_parallel_tool_use)
    if isinstance(choice, m.ToolChoiceAuto):
        return "auto", parallel_off
    if isinstance(choice, m.ToolChoiceAny):
        return "required", parallel_off
    return {"type": "function", "function": {"name": choice.name}}, parallel_off


def budget_effort(budget: int) -> str:
    if budget < 4096:
        return "low"
    if budget < 16384:
        return "medium"
    return "high"


def reasoning(request: m.CountTokensRequest) -> tuple[str | None, str]:
    """(chat reasoning_effort, the Messages field it came from)."""
    thinking = request.thinking
    effort = request.output_config.effort if request.output_config else None
    if isinstance(thinking, m.ThinkingEnabled):
        return budget_effort(thinking.budget_tokens), "thinking.budget_tokens"
    if isinstance(thinking, m.ThinkingDisabled):
        return None, "thinking"
    if effort is not None:
        return effort, "output_config.effort"
    return None, "thinking"


def options(request: m.CountTokensRequest, body: dict[str, Any], problems: list[Problem]) -> None:
    """The generation options of a create request (count_tokens has none of these)."""
    if not isinstance(request, m.MessagesRequest):
        return
    if request.max_tokens >= 1:
        body["max_tokens"] = request.max_tokens
    else:
        problems.append(Problem("max_tokens", "`0` (warming the prompt cache) is only supported on Anthropic models."))
    stops = request.stop_sequences or []
    if len(stops) > MAX_STOP_SEQUENCES:
        problems.append(Problem("stop_sequences", f"this model takes at most {MAX_STOP_SEQUENCES} stop sequences."))
    if stops:
        body["stop"] = stops[:MAX_STOP_SEQUENCES]
    for name in ("temperature", "top_p"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.top_k is not None:
        problems.append(Problem("top_k", "only Anthropic models take `top_k`; omit it for this model."))
    if request.metadata is not None and request.metadata.user_id:
        body["user"] = request.metadata.user_id
    if request.service_tier == "standard_only":
        body["service_tier"] = "default"
    if request.container is not None:
        problems.append(Problem("container", "code-execution containers are only available on Anthropic models."))
    if request.stream:
        body["stream"] = True


def to_chat(request: m.CountTokensRequest) -> Translated:
    """The chat request for a Messages (or count_tokens) request, and what only Anthropic honours."""
    history = _History()
    system = system_text(request.system)
    if system:
        history.add({"role": "system", "content": system}, "system")
    for i, message in enumerate(request.messages):
        where = f"messages[{i}]"
        if isinstance(message, m.SystemMessage):
            text = system_text(message.content)
            if text:
                history.add({"role": "system", "content": text}, where)
        elif isinstance(message, m.UserMessage):
            user_turn(message, where, history)
        else:
            assistant_turn(message, where, history)
    if not history.messages:
        history.add({"role": "user", "content": ""}, "messages")
    problems = history.problems
    body: dict[str, Any] = {"model": request.model, "messages": history.messages}
    tools = chat_tools(request, problems)
    if tools:
        body["tools"] = tools
        choice, parallel_off = chat_tool_choice(request.tool_choice)
        if isinstance(choice, dict) and choice["function"]["name"] not in {t["function"]["name"] for t in tools}:
            choice = "required"  # the named tool was refused above; its problem is the 400
        if choice is not None:
            body["tool_choice"] = choice
        if parallel_off:
            body["parallel_tool_calls"] = False
    effort, reasoning_from = reasoning(request)
    if effort is not None:
        body["reasoning_effort"] = effort
    fmt = request.output_config.format if request.output_config else None
    if fmt is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": fmt.schema_, "strict": True},
        }
    if request.mcp_servers:
        problems.append(Problem("mcp_servers", "remote MCP servers are only available on Anthropic models."))
    options(request, body, problems)
    try:
        chat = p.validate(p.ChatCompletionRequest, body)
    except InvalidRequest as exc:  # something the Messages model let through that chat can't carry
        problems.append(Problem("messages", exc.message))
        chat = plain_chat(request.model, history.messages)
    return Translated(chat=chat, problems=problems, origins=history.origins, reasoning_from=reasoning_from)


def plain_chat(model: str, messages: list[dict[str, Any]]) -> p.ChatCompletionRequest:
    """A chat request holding only the text of `messages`: enough to estimate the prompt's size."""
    texts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [part.get("text") or "" for part in content if isinstance(part, dict)]
    return p.validate(
        p.ChatCompletionRequest, {"model": model, "messages": [{"role": "user", "content": joined(texts)}]}
    )


def count_input_tokens(translated: Translated) -> int:
    """The gateway's own count of a request's input: the prompt, and the tools' definitions."""
    tokens = count_prompt(translated.chat.messages)
    for tool in translated.chat.tools or []:
        if isinstance(tool, p.FunctionTool):
            tokens += count_tokens(orjson.dumps(tool.function.model_dump(exclude_none=True)).decode())
    return tokens


# ---- answers -------------------------------------------------------------------------------------


def message_id() -> str:
    return p.random_id("msg_", 24)


def usage_of(chat_usage: dict[str, Any] | None) -> dict[str, int]:
    """Anthropic usage from chat usage: cached prompt tokens are cache reads, the rest plain input."""
    chat_usage = chat_usage or {}
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    details = chat_usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    return {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": int(chat_usage.get("completion_tokens") or 0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def stop_reason(choice: dict[str, Any], stop_sequences: list[str]) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for a chat choice; `stop_sequence` when the upstream names the
    sequence that matched (vLLM's `stop_reason`)."""
    finish = choice.get("finish_reason") or "stop"
    matched = choice.get("stop_reason")
    if finish == "stop" and isinstance(matched, str) and matched in stop_sequences:
        return "stop_sequence", matched
    return FINISH_TO_STOP.get(finish, "end_turn"), None


def reasoning_text(message: dict[str, Any]) -> str:
    """Reasoning an OpenAI-compatible upstream returned beside the content (DeepSeek, vLLM, OpenRouter)."""
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def tool_input(arguments: str, name: str) -> dict[str, Any]:
    try:
        value = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise upstream_failure(f"The model called `{name}` with arguments that are not a JSON object.")
    return value


def to_message(answer: dict[str, Any], stop_sequences: list[str]) -> dict[str, Any]:
    """An Anthropic `Message` from a `CreateChatCompletionResponse` (its first choice)."""
    choice = (answer.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    thought = reasoning_text(message)
    if thought:
        content.append({"type": "thinking", "thinking": thought, "signature": ""})
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(part.get("text") or "" for part in text if isinstance(part, dict))
    if text:
        content.append({"type": "text", "text": text})
    if message.get("refusal"):
        content.append({"type": "text", "text": message["refusal"]})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        name = fn.get("name") or ""
        content.append(
            {
                "type": "tool_use",
                "id": tool_use_id(call.get("id"), call.get("extra_content")),
                "name": name,
                "input": tool_input(fn.get("arguments") or "", name),
            }
        )
    reason, sequence = stop_reason(choice, stop_sequences)
    if message.get("refusal"):
        reason = "refusal"
    return {
        "id": message_id(),
        "type": "message",
        "role": "assistant",
        "model": answer.get("model") or "",
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage_of(answer.get("usage")),
    }


# ---- streams -------------------------------------------------------------------------------------


def event(payload: dict[str, Any]) -> bytes:
    """One server-sent event with Anthropic's framing: an `event:` line naming the data's `type`."""
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class MessagesSSE:
    """Chat chunks as Anthropic's stream events (a `relay.StreamDialect`).

    message_start (usage: the gateway's estimate of the input, replaced by the upstream's count in
    message_delta) and a ping with the first chunk; then content blocks, one open at a time:
    content_block_start, deltas (text_delta, input_json_delta, thinking_delta),
    content_block_stop; at the end message_delta (stop_reason, usage) and message_stop. A stream
    with no content still has one (empty) text block. A failure after the start is an `error` event.
    """

    def __init__(self, model: str, input_estimate: int, stop_sequences: list[str]) -> None:
        self.model = model
        self.input_estimate = input_estimate
        self.stop_sequences = stop_sequences
        self.id = message_id()
        self.started = False
        self.blocks = 0  # content blocks opened so far
        self.open: str | None = None  # the kind of the open block (text, thinking, tool_use)
        self.tools: dict[int, int] = {}  # chat tool call index -> block index
        self.reason: str | None = None
        self.sequence: str | None = None
        self.usage: dict[str, Any] | None = None

    # -- the dialect --

    def chunk(self, chunk: dict[str, Any]) -> bytes | None:
        out: list[bytes] = []
        if not self.started:
            self.started = True
            out += [self._message_start(chunk.get("model") or self.model), event({"type": "ping"})]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) == 0:
                out += self._choice(choice)
        return b"".join(out) or None

    def end(self, prompt_tokens: int, completion_tokens: int, counted_here: bool) -> bytes:
        out = self._close()
        if not self.blocks:
            out += self._open("text", {"type": "text", "text": ""}) + self._close()
        usage = usage_of(self.usage if not counted_here and self.usage else None)
        usage["input_tokens"] = max(prompt_tokens - usage["cache_read_input_tokens"], 0)
        usage["output_tokens"] = completion_tokens
        delta = {"stop_reason": self.reason or "end_turn", "stop_sequence": self.sequence}
        out.append(event({"type": "message_delta", "delta": delta, "usage": usage}))
        out.append(event({"type": "message_stop"}))
        return b"".join(out)

    def error(self, err: GatewayError) -> bytes:
        return event(envelope.error_body(err))

    # -- helpers --

    def _message_start(self, model: str) -> bytes:
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self.input_estimate,
                "output_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        return event({"type": "message_start", "message": message})

    def _open(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        out = self._close()
        self.open = kind
        self.blocks += 1
        out.append(event({"type": "content_block_start", "index": self.blocks - 1, "content_block": block}))
        return out

    def _close(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        return [event({"type": "content_block_stop", "index": self.blocks - 1})]

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return event({"type": "content_block_delta", "index": index, "delta": delta})

    def _choice(self, choice: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        delta = choice.get("delta") or {}
        thought = reasoning_text(delta)
        if thought:
            if self.open != "thinking":
                out += self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            out.append(self._delta(self.blocks - 1, {"type": "thinking_delta", "thinking": thought}))
        for key in ("content", "refusal"):
            text = delta.get(key)
            if isinstance(text, str) and text:
                if self.open != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                out.append(self._delta(self.blocks - 1, {"type": "text_delta", "text": text}))
                if key == "refusal":
                    self.reason = "refusal"
        for call in delta.get("tool_calls") or []:
            out += self._tool_call(call)
        if choice.get("finish_reason") and self.reason is None:
            self.reason, self.sequence = stop_reason(choice, self.stop_sequences)
        return out

    def _tool_call(self, call: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        position = int(call.get("index") or 0)
        fn = call.get("function") or {}
        if position not in self.tools:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": tool_use_id(call.get("id"), call.get("extra_content")),
                "name": fn.get("name") or "",
                "input": {},
            }
            out += self._open("tool_use", block)
            self.tools[position] = self.blocks - 1
        arguments = fn.get("arguments")
        if isinstance(arguments, str) and arguments:
            out.append(self._delta(self.tools[position], {"type": "input_json_delta", "partial_json": arguments}))
        return out
