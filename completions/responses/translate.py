"""Responses API <-> Chat Completions, as pure functions (no I/O): the bridge to every provider.

`Bridge(request, history)` translates a `CreateResponse` request (plus, with
`previous_response_id`, the stored items it continues) into a
`ChatCompletionRequest`, raising a 400 that names the Responses parameter for
what no provider behind the gateway can honour. `Bridge.response(answer)` turns
a whole chat answer into a `Response` object; `stream.ResponsesSSE` (a relay
`StreamDialect`) turns chat chunks into the typed Responses event stream.

Rules worth knowing (README, "Responses API"):
- Namespaces: a `namespace` tool's functions reach the provider as functions
  named `<namespace>__<name>` (shortened with a hash past 64 characters); calls
  come back with their own `name` and `namespace`, as the client declared them.
- Built-in tools (`web_search`, `file_search`, ...) can't run on a bridged model:
  they are dropped, with an `x-gateway-warning` header, unless `tool_choice`
  requires one, which is a 400.
- Reasoning state that providers need back in a tool loop (Gemini thought
  signatures, Anthropic thinking blocks: the chat tool call's `extra_content`)
  leaves as a `reasoning` item whose `encrypted_content` is signed by the
  gateway, placed before the function call it belongs to; sent back in `input`
  (or kept in a stored response), it rides on that call again. Reasoning items
  the gateway didn't sign are dropped: no provider here could read them.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core import signing
from pydantic import TypeAdapter, ValidationError

from .. import protocol as p
from ..errors import GatewayError, InvalidRequest, NotFound
from . import protocol as r

CARRIER_SALT = "completions.responses.reasoning"
CHAT_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ITEMS = TypeAdapter(list[r.InputItem])
WARNING_HEADER = "x-gateway-warning"

# Chat parameters a provider may name in a 400, and the Responses parameter the client sent.
PARAM_NAMES = {
    "response_format": "text.format",
    "verbosity": "text.verbosity",
    "max_completion_tokens": "max_output_tokens",
    "max_tokens": "max_output_tokens",
    "reasoning_effort": "reasoning.effort",
    "logprobs": "include",
    "tools": "tools",
    "tool_choice": "tool_choice",
    "parallel_tool_calls": "parallel_tool_calls",
}


def unsupported(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="unsupported_parameter")


def new_id(prefix: str) -> str:
    return p.random_id(prefix, 32)


# ---- reasoning carriers ------------------------------------------------------------------------


def seal(call_id: str, extra_content: dict[str, Any]) -> str:
    """The `encrypted_content` carrying a tool call's provider state (signed, compressed)."""
    return signing.dumps({"c": {call_id: extra_content}}, salt=CARRIER_SALT, compress=True)


def unseal(value: str | None) -> dict[str, dict[str, Any]]:
    """The tool calls' provider state inside a gateway-signed `encrypted_content` ({} if it isn't ours)."""
    if not value:
        return {}
    try:
        data = signing.loads(value, salt=CARRIER_SALT)
    except signing.BadSignature:
        return {}
    calls = data.get("c") if isinstance(data, dict) else None
    return {k: v for k, v in calls.items() if isinstance(v, dict)} if isinstance(calls, dict) else {}


# ---- tool names --------------------------------------------------------------------------------


def flat_name(namespace: str | None, name: str) -> str:
    """The chat function name for `name` inside `namespace` (or alone): deterministic, at most 64 chars."""
    full = f"{namespace}__{name}" if namespace else name
    if CHAT_NAME.match(full):
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:10]
    return f"{re.sub(r'[^a-zA-Z0-9_-]', '_', full)[:53]}_{digest}"


class ToolNames:
    """Chat function names <-> the (namespace, name) pairs the client knows."""

    def __init__(self) -> None:
        self.back: dict[str, tuple[str | None, str]] = {}

    def flat(self, namespace: str | None, name: str) -> str:
        flat = flat_name(namespace, name)
        self.back.setdefault(flat, (namespace or None, name))
        return flat

    def original(self, flat: str) -> tuple[str | None, str]:
        return self.back.get(flat, (None, flat))


# ---- request ------------------------------------------------------------------------------------


class Bridge:
    """One Responses request translated for the chat steps, and the answer translated back."""

    def __init__(
        self,
        request: r.CreateResponseRequest,
        history: list[dict[str, Any]] | None = None,
        referenced: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.request = request
        self.referenced = referenced or {}
        self.id = new_id("resp_")
        self.created_at = int(time.time())
        self.names = ToolNames()
        self.warnings: list[str] = []
        self.history = ITEMS.validate_python(history or [])
        self.new_items = self._own_items()
        self.message_items: list[str] = []  # per chat message: the `input[...]` it came from
        self.chat_request = self._chat_request()

    # ---- the chat request ----
    def _own_items(self) -> list[r.InputItem]:
        value = self.request.input
        if isinstance(value, str):
            return [r.MessageItem(type="message", role="user", content=value)]
        items: list[r.InputItem] = []
        for index, item in enumerate(value):
            if isinstance(item, r.ItemReference):
                found = self.referenced.get(item.id)
                if found is None:
                    raise NotFound(f"No stored item with id '{item.id}' was found.", param=f"input[{index}].id")
                items.extend(ITEMS.validate_python([found]))
            else:
                items.append(item)
        return items

    def _chat_request(self) -> p.ChatCompletionRequest:
        req = self.request
        body: dict[str, Any] = {"model": req.model, "messages": self._messages()}
        self._refuse_unsupported()
        body.update(self._tools())
        body.update(self._options())
        try:
            return p.ChatCompletionRequest.model_validate(body)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise InvalidRequest(f"The request can't be translated for the model: {loc}: {err['msg']}.") from None

    def _refuse_unsupported(self) -> None:
        req = self.request
        if req.background:
            raise unsupported("background", "Background responses are not supported by this gateway.")
        if req.conversation is not None:
            raise unsupported("conversation", "Conversations are not supported; use `previous_response_id`.")
        if req.context_management is not None:
            raise unsupported("context_management", "`context_management` is not supported by this gateway.")
        if req.prompt is not None:
            raise unsupported("prompt", "Stored prompt templates are not supported by this gateway.")
        if req.truncation == "auto":
            raise unsupported("truncation", "`truncation: auto` is not supported; the gateway never drops input.")
        if req.service_tier == "ultrafast":
            raise unsupported("service_tier", "`service_tier` `ultrafast` is not supported by this gateway.")
        reasoning = req.reasoning
        if reasoning is not None and reasoning.mode is not None:
            raise unsupported("reasoning.mode", "`reasoning.mode` is not supported by this gateway.")
        if reasoning is not None and reasoning.context not in (None, "auto"):
            raise unsupported("reasoning.context", "`reasoning.context` is not supported by this gateway.")

    def _options(self) -> dict[str, Any]:
        req = self.request
        out: dict[str, Any] = {}
        for name in (
            "temperature",
            "top_p",
            "metadata",
            "user",
            "safety_identifier",
            "prompt_cache_key",
            "prompt_cache_retention",
            "service_tier",
            "stream",
        ):
            value = getattr(req, name)
            if value is not None:
                out[name] = value
        if req.prompt_cache_options is not None:
            out["prompt_cache_options"] = req.prompt_cache_options.model_dump(exclude_none=True)
        if req.moderation is not None:
            out["moderation"] = req.moderation.model_dump(exclude_none=True)
        if req.max_output_tokens is not None:
            out["max_completion_tokens"] = req.max_output_tokens
        if req.reasoning is not None and req.reasoning.effort is not None:
            out["reasoning_effort"] = req.reasoning.effort
        if req.top_logprobs is not None or "message.output_text.logprobs" in (req.include or []):
            out["logprobs"] = True
            if req.top_logprobs is not None:
                out["top_logprobs"] = req.top_logprobs
        if req.text is not None:
            if req.text.verbosity is not None:
                out["verbosity"] = req.text.verbosity
            fmt = req.text.format
            if isinstance(fmt, r.FormatJsonObject):
                out["response_format"] = {"type": "json_object"}
            elif isinstance(fmt, r.FormatJsonSchema):
                spec: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema_}
                if fmt.description is not None:
                    spec["description"] = fmt.description
                if fmt.strict is not None:
                    spec["strict"] = fmt.strict
                out["response_format"] = {"type": "json_schema", "json_schema": spec}
        return out

    # ---- tools ----
    def _tools(self) -> dict[str, Any]:
        req = self.request
        functions: list[dict[str, Any]] = []
        dropped: list[str] = []
        for index, tool in enumerate(req.tools or []):
            if isinstance(tool, r.FunctionTool):
                functions.append(self._function(None, tool))
            elif isinstance(tool, r.NamespaceTool):
                functions.extend(self._function(tool.name, fn) for fn in tool.tools)
            elif tool.type == "custom":
                raise unsupported(f"tools[{index}]", "Custom (free-form) tools are not supported; use a function.")
            else:
                dropped.append(tool.type)
        choice = self._tool_choice(req.tool_choice, dropped, bool(functions))
        if dropped:
            self.warnings.append(
                f"built-in tools dropped (model {req.model} cannot run them): {', '.join(sorted(set(dropped)))}"
            )
        if not functions:
            return {}
        out: dict[str, Any] = {"tools": functions}
        if choice is not None:
            out["tool_choice"] = choice
        if req.parallel_tool_calls is not None:
            out["parallel_tool_calls"] = req.parallel_tool_calls
        return out

    def _function(self, namespace: str | None, tool: r.FunctionTool) -> dict[str, Any]:
        fn: dict[str, Any] = {"name": self.names.flat(namespace, tool.name)}
        if tool.description is not None:
            fn["description"] = tool.description
        if tool.parameters is not None:
            fn["parameters"] = tool.parameters
        if tool.strict is not None:
            fn["strict"] = tool.strict
        return {"type": "function", "function": fn}

    def _tool_choice(self, choice: r.ToolChoice | None, dropped: list[str], has_functions: bool) -> Any:
        """The chat `tool_choice`; a 400 when it requires a tool the model can't run."""
        if choice is None or choice in ("auto", "none"):
            return choice if has_functions else None
        if choice == "required":
            if not has_functions:
                raise unsupported(
                    "tool_choice", "`tool_choice: required` needs a function tool; built-in tools can't run here."
                )
            return "required"
        if isinstance(choice, r.ToolChoiceFunction):
            flat = flat_name(choice.namespace, choice.name)
            if flat not in self.names.back:
                raise InvalidRequest(
                    f"`tool_choice` names `{choice.name}`, which is not one of `tools`.", param="tool_choice"
                )
            return {"type": "function", "function": {"name": flat}}
        if isinstance(choice, r.ToolChoiceAllowed):
            allowed = []
            for entry in choice.tools:
                if entry.get("type") == "function" and isinstance(entry.get("name"), str):
                    flat = flat_name(entry.get("namespace"), entry["name"])
                    allowed.append({"type": "function", "function": {"name": flat}})
            if not allowed and (choice.mode == "required" or not has_functions):
                raise unsupported("tool_choice", "`tool_choice.tools` names no function tool this model can run.")
            return {"type": "allowed_tools", "allowed_tools": {"mode": choice.mode, "tools": allowed}}
        kind = getattr(choice, "type", choice)
        raise unsupported(
            "tool_choice",
            f"`tool_choice` requires the built-in tool `{kind}`, which model `{self.request.model}` "
            "cannot run through this gateway.",
        )

    # ---- input items -> messages ----
    def _messages(self) -> list[dict[str, Any]]:
        carried: dict[str, dict[str, Any]] = {}
        items = [("history", item) for item in self.history] + [
            (f"input[{i}]" if isinstance(self.request.input, list) else "input", item)
            for i, item in enumerate(self.new_items)
        ]
        for _, item in items:
            if isinstance(item, r.ReasoningItem):
                carried.update(unseal(item.encrypted_content))
        messages: list[dict[str, Any]] = []
        wheres: list[str] = []
        if self.request.instructions:
            messages.append({"role": "system", "content": self.request.instructions})
            wheres.append("instructions")
        assistant: dict[str, Any] | None = None
        for where, item in items:
            if isinstance(item, r.FunctionCallItem):
                if assistant is None:
                    assistant = {"role": "assistant", "content": None}
                    messages.append(assistant)
                    wheres.append(where)
                assistant.setdefault("tool_calls", []).append(self._call(item, carried))
                continue
            if isinstance(item, r.MessageItem) and item.role == "assistant":
                text, refusal = assistant_text(item, where)
                if assistant is not None and "tool_calls" not in assistant:
                    assistant["content"] = (assistant["content"] or "") + text
                    continue
                assistant = {"role": "assistant", "content": text}
                if refusal:
                    assistant["refusal"] = refusal
                messages.append(assistant)
                wheres.append(where)
                continue
            if isinstance(item, r.ReasoningItem):
                continue
            assistant = None
            messages.append(
                tool_message(item, where) if isinstance(item, r.FunctionCallOutputItem) else input_message(item, where)
            )
            wheres.append(where)
        if not messages:
            raise InvalidRequest("The request has no input for the model.", param="input")
        self.message_items = wheres
        return messages

    def _call(self, item: r.FunctionCallItem, carried: dict[str, dict[str, Any]]) -> dict[str, Any]:
        call: dict[str, Any] = {
            "id": item.call_id,
            "type": "function",
            "function": {"name": self.names.flat(item.namespace, item.name), "arguments": item.arguments},
        }
        if item.call_id in carried:
            call["extra_content"] = carried[item.call_id]
        return call

    @contextmanager
    def client_params(self) -> Iterator[None]:
        """Inside: a 400 naming a chat parameter is re-raised naming the Responses parameter."""
        try:
            yield
        except InvalidRequest as exc:
            exc.param = self.param_name(exc.param)
            exc.message = rename_in_message(exc.message)
            raise

    def param_name(self, param: str | None) -> str | None:
        if not param:
            return param
        match = re.match(r"messages\[(\d+)\]", param)
        if match:
            index = int(match.group(1))
            return self.message_items[index] if index < len(self.message_items) else "input"
        head = re.split(r"[.\[]", param, maxsplit=1)[0]
        return PARAM_NAMES.get(head, param) if head in PARAM_NAMES else param

    # ---- the answer -> a Response ----
    def response(self, answer: dict[str, Any]) -> dict[str, Any]:
        """The `Response` for a whole chat answer."""
        choice = (answer.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        output: list[dict[str, Any]] = []
        reasoning_text = message.get("reasoning_content") or message.get("reasoning")
        if isinstance(reasoning_text, str) and reasoning_text:
            output.append(reasoning_item(new_id("rs_"), reasoning_text))
        content, refusal = message.get("content"), message.get("refusal")
        calls = message.get("tool_calls") or []
        if content or refusal or not calls:
            logprobs = output_logprobs((choice.get("logprobs") or {}).get("content"))
            status = "incomplete" if choice.get("finish_reason") == "length" else "completed"
            output.append(message_item(new_id("msg_"), content or "", refusal, logprobs, status))
        for call in calls:
            fn = call.get("function") or {}
            if call.get("extra_content"):
                output.append(carrier_item(call.get("id", ""), call["extra_content"]))
            output.append(
                self.function_item(new_id("fc_"), call.get("id", ""), fn.get("name", ""), fn.get("arguments"))
            )
        status, details = status_of(choice.get("finish_reason"))
        return self.envelope(status, output, usage_of(answer.get("usage")), answer.get("model"), details=details)

    def function_item(self, item_id: str, call_id: str, flat: str, arguments: str | None, done: bool = True) -> Any:
        namespace, name = self.names.original(flat)
        item: dict[str, Any] = {
            "id": item_id,
            "type": "function_call",
            "status": "completed" if done else "in_progress",
            "arguments": arguments or "",
            "call_id": call_id,
            "name": name,
        }
        if namespace:
            item["namespace"] = namespace
        return item

    def envelope(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None,
        model: str | None = None,
        *,
        details: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The `Response` object around `output`, echoing the request's settings."""
        req = self.request
        fmt: dict[str, Any] = {"type": "text"}
        if req.text is not None and req.text.format is not None:
            fmt = req.text.format.model_dump(by_alias=True, exclude_none=True)
        text: dict[str, Any] = {"format": fmt}
        if req.text is not None and req.text.verbosity is not None:
            text["verbosity"] = req.text.verbosity
        reasoning = req.reasoning
        tool_choice: Any = req.tool_choice if req.tool_choice is not None else "auto"
        if not isinstance(tool_choice, str):
            tool_choice = tool_choice.model_dump(exclude_none=True)
        envelope = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "completed_at": int(time.time()) if status == "completed" else None,
            "error": error,
            "incomplete_details": details,
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "max_tool_calls": req.max_tool_calls,
            "model": model or req.model,
            "output": output,
            "parallel_tool_calls": req.parallel_tool_calls is not False,
            "previous_response_id": req.previous_response_id,
            "reasoning": {
                "effort": reasoning.effort if reasoning else None,
                "summary": (reasoning.summary or reasoning.generate_summary) if reasoning else None,
            },
            "temperature": req.temperature if req.temperature is not None else 1.0,
            "text": text,
            "tool_choice": tool_choice,
            "tools": [echo_tool(t) for t in req.tools or []],
            "top_p": req.top_p if req.top_p is not None else 1.0,
            "top_logprobs": req.top_logprobs if req.top_logprobs is not None else 0,
            "truncation": req.truncation or "disabled",
            "background": False,
            "service_tier": req.service_tier or "default",
            "usage": usage,
            "user": req.user,
            "safety_identifier": req.safety_identifier,
            "prompt_cache_key": req.prompt_cache_key,
            "metadata": req.metadata or {},
        }
        for key in ("user", "usage"):  # present, or absent: the spec has no null for them
            if envelope[key] is None:
                del envelope[key]
        return envelope

    # ---- what is stored ----
    def stored_input(self) -> list[dict[str, Any]]:
        """Every input item of this response (the continued history first), with ids, as stored."""
        return [resource(item) for item in [*self.history, *self.new_items]]


def echo_tool(tool: Any) -> dict[str, Any]:
    """A tool as the response lists it (a function always with `parameters` and `strict`, maybe null)."""
    if isinstance(tool, r.FunctionTool):
        return {"parameters": None, "strict": None, **tool.model_dump(exclude_none=True)}
    if isinstance(tool, r.NamespaceTool):
        return {**tool.model_dump(exclude_none=True), "tools": [echo_tool(t) for t in tool.tools]}
    return dict(tool.model_dump(exclude_none=True))


def rename_in_message(message: str) -> str:
    for chat, ours in PARAM_NAMES.items():
        message = message.replace(f"`{chat}`", f"`{ours}`")
    return message


# ---- items -> chat messages ---------------------------------------------------------------------


def assistant_text(item: r.MessageItem, where: str) -> tuple[str, str | None]:
    if isinstance(item.content, str):
        return item.content, None
    texts, refusals = [], []
    for j, part in enumerate(item.content):
        if isinstance(part, (r.OutputText, r.InputText)):
            texts.append(part.text)
        elif isinstance(part, r.Refusal):
            refusals.append(part.refusal)
        else:
            raise InvalidRequest(
                "An assistant message holds only text and refusals.", param=f"{where}.content[{j}].type"
            )
    return "".join(texts), ("".join(refusals) or None)


def input_message(item: r.MessageItem, where: str) -> dict[str, Any]:
    if isinstance(item.content, str):
        return {"role": item.role, "content": item.content}
    if item.role in ("system", "developer"):
        texts = []
        for j, part in enumerate(item.content):
            if not isinstance(part, (r.InputText, r.OutputText)):
                raise InvalidRequest(f"A {item.role} message holds only text.", param=f"{where}.content[{j}].type")
            texts.append(part.text)
        return {"role": item.role, "content": "\n".join(texts)}
    parts = [user_part(part, f"{where}.content[{j}]") for j, part in enumerate(item.content)]
    return {"role": "user", "content": parts or ""}


def user_part(part: Any, where: str) -> dict[str, Any]:
    if isinstance(part, (r.InputText, r.OutputText)):
        return {"type": "text", "text": part.text}
    if isinstance(part, r.InputImage):
        if part.image_url is None:
            raise unsupported(f"{where}.file_id", "Images by `file_id` are not supported; send `image_url`.")
        detail = "high" if part.detail == "original" else part.detail
        return {"type": "image_url", "image_url": {"url": part.image_url, "detail": detail}}
    if isinstance(part, r.InputFile):
        if part.file_data is None:
            param = f"{where}.file_url" if part.file_url else f"{where}.file_id"
            raise unsupported(param, "Files are supported as `file_data` (a data: URL or base64), not by id or URL.")
        file: dict[str, Any] = {"file_data": part.file_data}
        if part.filename:
            file["filename"] = part.filename
        return {"type": "file", "file": file}
    raise InvalidRequest("A user message holds text, images and files, not refusals.", param=f"{where}.type")


def tool_message(item: r.FunctionCallOutputItem, where: str) -> dict[str, Any]:
    if isinstance(item.output, str):
        content: str = item.output
    else:
        texts = []
        for j, part in enumerate(item.output):
            if not isinstance(part, r.InputText):
                raise unsupported(
                    f"{where}.output[{j}]", "A `function_call_output` can carry text only through this gateway."
                )
            texts.append(part.text)
        content = "".join(texts)
    return {"role": "tool", "tool_call_id": item.call_id, "content": content}


# ---- output items --------------------------------------------------------------------------------


def message_item(
    item_id: str, text: str, refusal: str | None, logprobs: list[dict[str, Any]], status: str = "completed"
) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text or not refusal:
        content.append(text_part(text, logprobs))
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def text_part(text: str, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": text}] if text else []
    return {"id": item_id, "type": "reasoning", "summary": summary}


def carrier_item(call_id: str, extra_content: dict[str, Any]) -> dict[str, Any]:
    """The reasoning item that carries a tool call's provider state back to the gateway."""
    return {"id": new_id("rs_"), "type": "reasoning", "summary": [], "encrypted_content": seal(call_id, extra_content)}


def output_logprobs(entries: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    out = []
    for e in entries or []:
        top = [
            {"token": t.get("token", ""), "logprob": t.get("logprob", 0.0), "bytes": t.get("bytes") or []}
            for t in e.get("top_logprobs") or []
        ]
        out.append(
            {
                "token": e.get("token", ""),
                "logprob": e.get("logprob", 0.0),
                "bytes": e.get("bytes") or [],
                "top_logprobs": top,
            }
        )
    return out


def status_of(finish_reason: str | None) -> tuple[str, dict[str, Any] | None]:
    """A chat finish reason as a Response status and `incomplete_details`."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def usage_of(chat_usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """Chat `CompletionUsage` as `ResponseUsage`."""
    if not chat_usage:
        return None
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    completion = int(chat_usage.get("completion_tokens") or 0)
    cached = (chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (chat_usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(cached), "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(reasoning)},
        "total_tokens": prompt + completion,
    }


def resource(item: r.InputItem) -> dict[str, Any]:
    """An input item as `GET /responses/{id}/input_items` lists it: with an id and a status."""
    data = item.model_dump(by_alias=True, exclude_none=True, mode="json")
    if isinstance(item, r.MessageItem):
        data.setdefault("id", new_id("msg_"))
        if isinstance(item.content, str):
            part = text_part(item.content) if item.role == "assistant" else {"type": "input_text", "text": item.content}
            data["content"] = [part]
        data["status"] = data.get("status") or "completed"
    elif isinstance(item, r.FunctionCallItem):
        data.setdefault("id", new_id("fc_"))
        data["status"] = data.get("status") or "completed"
    elif isinstance(item, r.FunctionCallOutputItem):
        data.setdefault("id", new_id("fco_"))
        data["status"] = data.get("status") or "completed"
    else:
        data.setdefault("id", new_id("rs_"))
    return data


# ---- errors -----------------------------------------------------------------------------------------


def response_error(err: GatewayError) -> dict[str, Any]:
    """A gateway error as a Response's `error` (`ResponseError`, whose codes are few)."""
    if err.status == 429:
        code = "rate_limit_exceeded"
    elif err.status == 400:
        code = "invalid_prompt"
    else:
        code = "server_error"
    return {"code": code, "message": err.message}
