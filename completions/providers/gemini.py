"""Gemini through the google-genai SDK: OpenAI chat completions and embeddings in, Gemini and back.

The module is cut in two: pure translation functions (OpenAI request -> Gemini
contents and config; Gemini response or stream chunk -> OpenAI response or
chunks), tested without a network, and `GeminiProvider`, which only does I/O
with `client.aio.models` and maps failures to gateway errors.

Request side
    system/developer messages -> `system_instruction` (in order); user -> user;
    assistant -> model; tool -> a `function_response` part in a user turn,
    `{"result": <content>}`, its function name recovered from the earlier
    assistant `tool_calls` by id.
    Consecutive turns of the same role are merged, as Gemini requires.
    Parts: text; `image_url` data: URL -> inline data; http(s) image URL ->
    file data with the MIME type of its extension; `input_audio` -> inline
    audio; `file` with `file_data` -> inline data.
    Parameters: max_tokens/max_completion_tokens -> max_output_tokens,
    temperature, top_p, seed, presence/frequency_penalty, stop ->
    stop_sequences, n -> candidate_count, logprobs -> response_logprobs,
    top_logprobs -> logprobs, response_format json_object -> JSON MIME type,
    json_schema -> JSON MIME type + response_json_schema, tools ->
    function declarations (raw JSON schema; `strict` needs no flag, Gemini
    applies the schema it is given), tool_choice none/auto/required/
    named -> NONE/AUTO/ANY/ANY + allowed_function_names (allowed_tools: the
    declarations are narrowed to the allowed ones), service_tier flex/priority
    -> FLEX/PRIORITY (auto/default: the provider's default).

Thought signatures
    Gemini returns opaque bytes with function calls and rejects the next turn
    without them. They travel on the OpenAI side where Google's own
    OpenAI-compatible endpoint puts them, base64 in
    `tool_calls[].extra_content.google.thought_signature`, and come back from
    there unchanged. A model turn whose function calls carry none (a history
    built elsewhere) gets Google's documented placeholder
    `skip_thought_signature_validator` on its first call. Signatures Gemini
    puts on text parts are optional to send back and have no OpenAI field;
    they are dropped.

reasoning_effort -> thinking
    none -> thinking_budget 0.
    Gemini 2.x (thinking_budget, in tokens): minimal 512, low 1024,
    medium 8192, high 24576.
    Gemini 3 and later (thinking_level): minimal MINIMAL, low LOW,
    medium MEDIUM, high HIGH, xhigh XHIGH.
    xhigh on Gemini 2.x, and max anywhere, have no faithful equivalent: 400.

Not honoured (400 `unsupported_parameter`): logit_bias, audio output and
`modalities` with audio, web_search_options, verbosity, prediction,
moderation, prompt_cache_retention/options (Gemini caches prompt
prefixes implicitly, with no TTL to promise; `prompt_cache_key`, a mere
routing hint, is accepted), the deprecated functions/function_call
(and `function` messages), custom tools, `parallel_tool_calls: false`,
`service_tier` scale/fast, OpenAI file ids, image URLs whose extension is not
an image type Gemini accepts. `image_url.detail` is a resolution hint with no
faithful Gemini counterpart on this API version; it is ignored.

Response side
    Text parts -> content (thought parts are not content); function calls ->
    tool_calls with generated `call_` ids; one choice per candidate; finish
    STOP -> stop (tool_calls when the answer calls functions), MAX_TOKENS ->
    length, safety-type reasons -> content_filter; usage_metadata -> usage
    (completion includes thinking tokens, reported as reasoning_tokens; cached
    prompt tokens as cached_tokens). A prompt Gemini blocks is a 400
    `content_filter`.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import math
import mimetypes
import re
from collections.abc import AsyncIterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx
import orjson
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from .. import protocol as p
from ..errors import (
    GatewayError,
    InvalidRequest,
    UpstreamError,
    from_upstream_status,
    upstream_failure,
    upstream_timeout,
    upstream_unreachable,
)
from .base import Prepared, Provider, Route, unsupported, upstream_failures
from .inputs import decode_base64, parse_data_url, parse_tool_arguments

try:  # google-genai prefers httpx2 when it is installed
    import httpx2
except ImportError:  # pragma: no cover - depends on the environment
    httpx2 = None  # type: ignore[assignment]

PROVIDER = "gemini"
DEFAULT_KEY_ENV = "GEMINI_API_KEY"
# Google's documented placeholder for function calls that never had a signature. The SDK
# base64-encodes bytes, so these are the bytes whose encoding is the placeholder itself.
SKIP_SIGNATURE = base64.urlsafe_b64decode("skip_thought_signature_validator")
IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".heif": "image/heif",
}
AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mp3"}
THINKING_BUDGETS = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576}
THINKING_LEVELS = {
    "minimal": types.ThinkingLevel.MINIMAL,
    "low": types.ThinkingLevel.LOW,
    "medium": types.ThinkingLevel.MEDIUM,
    "high": types.ThinkingLevel.HIGH,
    "xhigh": types.ThinkingLevel.XHIGH,
}
SERVICE_TIERS: dict[str, types.ServiceTier | None] = {
    "auto": None,
    "default": None,
    "flex": types.ServiceTier.FLEX,
    "priority": types.ServiceTier.PRIORITY,
}
FILTERED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "MODEL_ARMOR",
    }
)
# Error reasons Gemini sends (with 400 or 403) when the API key itself is wrong.
BAD_KEY_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_NOT_FOUND"})
EMBED_BATCH = 100  # batchEmbedContents takes at most 100 requests


# ---- OpenAI request -> Gemini request ------------------------------------------------------


@dataclass
class GeminiRequest:
    """What `generate_content` is called with."""

    contents: list[types.Content]
    config: types.GenerateContentConfig


def to_gemini(request: p.ChatCompletionRequest, upstream_model: str) -> GeminiRequest:
    """The Gemini contents and config for `request`; a 400 for anything Gemini can't honour."""
    system, contents = translate_messages(request.messages)
    config = generation_config(request, upstream_model)
    config.system_instruction = system
    return GeminiRequest(contents=contents, config=config)


def translate_messages(messages: Sequence[Any]) -> tuple[types.Content | None, list[types.Content]]:
    """(system instruction, turns): the whole history, in order, same-role turns merged."""
    names: dict[str, str] = {}  # tool_call_id -> function name, from earlier assistant messages
    system: list[types.Part] = []
    turns: list[types.Content] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if isinstance(message, (p.SystemMessage, p.DeveloperMessage)):
            system.extend(types.Part(text=text) for text in _texts(message.content) if text)
            continue
        role, parts = message_parts(message, where, names)
        if not parts:
            continue
        if turns and turns[-1].role == role:
            turns[-1].parts = [*(turns[-1].parts or []), *parts]
        else:
            turns.append(types.Content(role=role, parts=parts))
    if not turns:
        raise InvalidRequest(
            "Gemini needs at least one user, assistant or tool message with content besides the system prompt.",
            param="messages",
        )
    return (types.Content(parts=system) if system else None), turns


def _texts(content: Any) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    return [part.text for part in content if isinstance(part, p.TextPart)]


def message_parts(message: Any, where: str, names: dict[str, str]) -> tuple[str, list[types.Part]]:
    """The Gemini role and parts of one non-system message."""
    if isinstance(message, p.UserMessage):
        return "user", user_parts(message.content, where)
    if isinstance(message, p.AssistantMessage):
        return "model", assistant_parts(message, where, names)
    if isinstance(message, p.ToolMessage):
        return "user", [tool_result_part(message, where, names)]
    raise unsupported(
        f"{where}.role",
        "Messages with role `function` (the deprecated function-calling API) are not supported by Gemini "
        "models on this gateway; use `tools` and `tool` messages.",
    )


def user_parts(content: str | list[Any], where: str) -> list[types.Part]:
    if isinstance(content, str):
        return [types.Part(text=content)] if content else []
    parts = []
    for j, part in enumerate(content):
        converted = user_part(part, f"{where}.content[{j}]")
        if converted is not None:
            parts.append(converted)
    return parts


def user_part(part: Any, where: str) -> types.Part | None:
    """One OpenAI content part as a Gemini part (None for empty text)."""
    if isinstance(part, p.TextPart):
        return types.Part(text=part.text) if part.text else None
    if isinstance(part, p.ImagePart):
        return image_part(part.image_url.url, f"{where}.image_url.url")
    if isinstance(part, p.AudioPart):
        data = decode_base64(part.input_audio.data, f"{where}.input_audio.data")
        return types.Part(inline_data=types.Blob(mime_type=AUDIO_TYPES[part.input_audio.format], data=data))
    if isinstance(part, p.FilePart):
        return file_part(part.file, f"{where}.file")
    raise unsupported(where, f"Content parts of type `{getattr(part, 'type', '?')}` are not supported.")


def image_part(url: str, param: str) -> types.Part:
    """A data: URL becomes inline data; an http(s) URL becomes file data with a guessed MIME type."""
    if url.startswith("data:"):
        data_url = parse_data_url(url, param)
        return types.Part(inline_data=types.Blob(mime_type=data_url.mime, data=data_url.bytes(param)))
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise InvalidRequest("An image URL must be an http(s) URL or a base64 data: URL.", param=param)
    mime = image_type_of(parsed.path)
    if mime is None:
        raise unsupported(
            param,
            "Gemini needs the MIME type of an image URL, and it can't be told from this URL's extension; "
            f"use a URL ending in one of {', '.join(sorted(IMAGE_TYPES))}, or send the image as a base64 data: URL.",
        )
    return types.Part(file_data=types.FileData(file_uri=url, mime_type=mime))


def image_type_of(path: str) -> str | None:
    """The image MIME type Gemini accepts for a URL path's extension, if any."""
    dot = path.rfind(".")
    return IMAGE_TYPES.get(path[dot:].lower()) if dot != -1 else None


def file_part(ref: p.FileRef, param: str) -> types.Part:
    """An inline file (data: URL or base64 with a filename telling its type)."""
    if ref.file_id is not None:
        raise unsupported(
            f"{param}.file_id", "OpenAI file ids mean nothing to Gemini; send the file inline as `file_data`."
        )
    if not ref.file_data:
        raise InvalidRequest("A file part needs `file_data`.", param=f"{param}.file_data")
    if ref.file_data.startswith("data:"):
        data_url = parse_data_url(ref.file_data, f"{param}.file_data")
        return types.Part(inline_data=types.Blob(mime_type=data_url.mime, data=data_url.bytes(f"{param}.file_data")))
    mime = mimetypes.guess_type(ref.filename or "")[0]
    if mime is None:
        raise unsupported(
            f"{param}.filename",
            "The file's MIME type can't be told: send `file_data` as a data: URL, "
            "or a `filename` with a known extension.",
        )
    return types.Part(inline_data=types.Blob(mime_type=mime, data=decode_base64(ref.file_data, f"{param}.file_data")))


def assistant_parts(message: p.AssistantMessage, where: str, names: dict[str, str]) -> list[types.Part]:
    """Text, then function calls (with their thought signatures); registers the calls' names."""
    if message.audio is not None:
        raise unsupported(f"{where}.audio", "Gemini models on this gateway do not produce audio; drop `audio`.")
    if message.function_call is not None:
        raise unsupported(
            f"{where}.function_call",
            "The deprecated `function_call` is not supported by Gemini models; use `tool_calls`.",
        )
    parts = [types.Part(text=text) for text in assistant_texts(message) if text]
    calls = [
        function_call_part(call, f"{where}.tool_calls[{j}]", names) for j, call in enumerate(message.tool_calls or [])
    ]
    if calls and all(call.thought_signature is None for call in calls):
        calls[0] = calls[0].model_copy(update={"thought_signature": SKIP_SIGNATURE})
    return parts + calls


def assistant_texts(message: p.AssistantMessage) -> list[str]:
    """What the assistant said, a refusal included (it is what the model answered)."""
    content = message.content
    if isinstance(content, list):
        texts = [part.text if isinstance(part, p.TextPart) else part.refusal for part in content]
    else:
        texts = _texts(content)
    return texts + ([message.refusal] if message.refusal else [])


def function_call_part(call: Any, where: str, names: dict[str, str]) -> types.Part:
    if not isinstance(call, p.FunctionToolCall):
        raise unsupported(where, "Custom tool calls are not supported by Gemini models.")
    names[call.id] = call.function.name
    args = parse_tool_arguments(call.function.arguments, f"{where}.function.arguments")
    return types.Part(
        function_call=types.FunctionCall(name=call.function.name, args=args),
        thought_signature=signature_from(call.extra_content, f"{where}.extra_content"),
    )


def signature_from(extra_content: dict[str, Any] | None, param: str) -> bytes | None:
    """The thought signature a tool call carries in `extra_content.google.thought_signature`."""
    google = (extra_content or {}).get("google")
    value = google.get("thought_signature") if isinstance(google, dict) else None
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest("`thought_signature` must be a base64 string.", param=f"{param}.google.thought_signature")
    return decode_base64(value, f"{param}.google.thought_signature")


def tool_result_part(message: p.ToolMessage, where: str, names: dict[str, str]) -> types.Part:
    """A tool message as a function response, named after the call it answers."""
    name = names.get(message.tool_call_id)
    if name is None:
        raise InvalidRequest(
            f"`tool_call_id` {message.tool_call_id!r} does not match a tool call of an earlier assistant message; "
            "Gemini needs the function's name, which only that call tells.",
            param=f"{where}.tool_call_id",
        )
    text = p.text_of(message.content)
    return types.Part(function_response=types.FunctionResponse(name=name, response={"result": text}))


def generation_config(request: p.ChatCompletionRequest, upstream_model: str) -> types.GenerateContentConfig:
    """Sampling, output, format, tools and thinking settings."""
    settings: dict[str, Any] = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "seed": request.seed,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        "max_output_tokens": request.output_limit,
        "stop_sequences": request.stop_sequences or None,
        "candidate_count": request.n,
    }
    if request.logprobs:
        settings["response_logprobs"] = True
        settings["logprobs"] = request.top_logprobs
    settings.update(response_format_settings(request.response_format))
    settings.update(tool_settings(request))
    settings["thinking_config"] = thinking_config(request.reasoning_effort, upstream_model)
    settings["service_tier"] = service_tier(request.service_tier)
    check_modalities(request.modalities)
    # The SDK would otherwise resume a cut stream with a new request: the gateway does its own retries.
    settings["automatic_continuation"] = False
    # Function declarations are forwarded to the client, never run here.
    settings["automatic_function_calling"] = types.AutomaticFunctionCallingConfig(disable=True)
    return types.GenerateContentConfig(**{k: v for k, v in settings.items() if v is not None})


def response_format_settings(fmt: Any) -> dict[str, Any]:
    if isinstance(fmt, p.ResponseFormatJsonObject):
        return {"response_mime_type": "application/json"}
    if isinstance(fmt, p.ResponseFormatJsonSchema):
        schema = fmt.json_schema.schema_
        return {"response_mime_type": "application/json", "response_json_schema": schema}
    return {}


def tool_settings(request: p.ChatCompletionRequest) -> dict[str, Any]:
    """Function declarations and the function-calling mode."""
    if request.parallel_tool_calls is False:
        raise unsupported(
            "parallel_tool_calls",
            "Gemini can't be told to call at most one function at a time; drop `parallel_tool_calls: false`.",
        )
    if not request.tools:
        return {}
    declarations = []
    for i, tool in enumerate(request.tools):
        if not isinstance(tool, p.FunctionTool):
            raise unsupported(f"tools[{i}]", "Custom tools are not supported by Gemini models; use function tools.")
        declarations.append(function_declaration(tool.function))
    mode, allowed = calling_mode(request.tool_choice, [d.name or "" for d in declarations])
    if allowed is not None and mode == types.FunctionCallingConfigMode.AUTO:
        declarations = [d for d in declarations if d.name in allowed]
        allowed = None
    calling = types.FunctionCallingConfig(mode=mode, allowed_function_names=allowed) if mode else None
    return {
        "tools": [types.Tool(function_declarations=declarations)],
        "tool_config": types.ToolConfig(function_calling_config=calling) if calling else None,
    }


def function_declaration(fn: p.FunctionDefinition) -> types.FunctionDeclaration:
    """An OpenAI function as a Gemini declaration, its parameters kept as raw JSON schema."""
    return types.FunctionDeclaration(name=fn.name, description=fn.description, parameters_json_schema=fn.parameters)


def calling_mode(choice: Any, names: list[str]) -> tuple[types.FunctionCallingConfigMode | None, list[str] | None]:
    """(mode, allowed function names) for an OpenAI `tool_choice`."""
    modes = {
        "none": types.FunctionCallingConfigMode.NONE,
        "auto": types.FunctionCallingConfigMode.AUTO,
        "required": types.FunctionCallingConfigMode.ANY,
    }
    if choice is None:
        return None, None
    if isinstance(choice, str):
        return modes[choice], None
    if isinstance(choice, p.NamedToolChoice):
        return types.FunctionCallingConfigMode.ANY, [choice.function.name]
    if isinstance(choice, p.AllowedToolsChoice):
        allowed = []
        for tool in choice.allowed_tools.tools:
            name = (tool.get("function") or {}).get("name") if tool.get("type") == "function" else None
            if name not in names:
                raise InvalidRequest(
                    "`tool_choice.allowed_tools.tools` may only name function tools listed in `tools`.",
                    param="tool_choice.allowed_tools.tools",
                )
            allowed.append(name)
        return modes[choice.allowed_tools.mode], allowed
    raise unsupported("tool_choice", "Custom tools are not supported by Gemini models.")


def thinking_major(upstream_model: str) -> int:
    """The Gemini generation of a model name (2 for gemini-2.5-flash, 3 for gemini-3-pro-preview)."""
    found = re.search(r"gemini-(\d+)", upstream_model)
    return int(found.group(1)) if found else 2


def thinking_config(effort: str | None, upstream_model: str) -> types.ThinkingConfig | None:
    """`reasoning_effort` as a thinking budget (Gemini 2.x) or level (Gemini 3+); see the module docstring."""
    if effort is None:
        return None
    if effort == "none":
        return types.ThinkingConfig(thinking_budget=0)
    if thinking_major(upstream_model) >= 3 and effort in THINKING_LEVELS:
        return types.ThinkingConfig(thinking_level=THINKING_LEVELS[effort])
    if thinking_major(upstream_model) < 3 and effort in THINKING_BUDGETS:
        return types.ThinkingConfig(thinking_budget=THINKING_BUDGETS[effort])
    raise unsupported(
        "reasoning_effort",
        f"`reasoning_effort: {effort}` has no equivalent for `{upstream_model}`; "
        "use none, minimal, low, medium or high.",
    )


def service_tier(tier: str | None) -> types.ServiceTier | None:
    if tier is None or tier in SERVICE_TIERS:
        return SERVICE_TIERS.get(tier) if tier else None
    raise unsupported("service_tier", f"Gemini has no `{tier}` service tier; use auto, default, flex or priority.")


def check_modalities(modalities: Sequence[str] | None) -> None:
    if modalities and "audio" in modalities:
        raise unsupported("modalities", "Gemini models on this gateway answer in text only.")


# ---- Gemini response -> OpenAI response ------------------------------------------------------


def raise_if_blocked(response: types.GenerateContentResponse) -> None:
    """A prompt Gemini refused to answer is the client's 400, with Gemini's reason."""
    feedback = response.prompt_feedback
    if feedback is None or feedback.block_reason is None or response.candidates:
        return
    reason = _enum_name(feedback.block_reason)
    detail = f" ({feedback.block_reason_message})" if feedback.block_reason_message else ""
    raise InvalidRequest(f"Gemini blocked the prompt: {reason}{detail}.", param="messages", code="content_filter")


def _enum_name(value: Any) -> str:
    return str(getattr(value, "value", value))


def finish_reason(reason: Any, called_functions: bool) -> str:
    """OpenAI's finish reason for a Gemini one."""
    name = _enum_name(reason) if reason is not None else "STOP"
    if name == "MAX_TOKENS":
        return "length"
    if name in FILTERED:
        return "content_filter"
    return "tool_calls" if called_functions else "stop"


def new_call_id() -> str:
    return p.random_id("call_")


def encode_signature(signature: bytes) -> str:
    return base64.b64encode(signature).decode()


def tool_call(part: types.Part) -> dict[str, Any]:
    """A Gemini function-call part as an OpenAI tool call (with its thought signature, if any)."""
    fn = part.function_call
    assert fn is not None
    call: dict[str, Any] = {
        "id": new_call_id(),
        "type": "function",
        "function": {"name": fn.name or "", "arguments": orjson.dumps(fn.args or {}).decode()},
    }
    if part.thought_signature:
        call["extra_content"] = {"google": {"thought_signature": encode_signature(part.thought_signature)}}
    return call


def answer_text(parts: Sequence[types.Part]) -> str | None:
    """The visible text of parts (thoughts excluded); None when there is none."""
    texts = [part.text for part in parts if part.text and not part.thought]
    return "".join(texts) if texts else None


def token_logprob(candidate: types.LogprobsResultCandidate) -> dict[str, Any]:
    token = candidate.token or ""
    # Proto JSON omits zero values: a missing log probability is a certain token.
    return {"token": token, "logprob": candidate.log_probability or 0.0, "bytes": list(token.encode())}


def logprobs_from(result: types.LogprobsResult | None) -> dict[str, Any] | None:
    """Gemini's logprobsResult as OpenAI's `logprobs` (chosen tokens with their top alternatives)."""
    if result is None or not result.chosen_candidates:
        return None
    tops = result.top_candidates or []
    content = []
    for i, chosen in enumerate(result.chosen_candidates):
        alternatives = (tops[i].candidates or []) if i < len(tops) else []
        content.append({**token_logprob(chosen), "top_logprobs": [token_logprob(a) for a in alternatives]})
    return {"content": content, "refusal": None}


def usage_from(meta: Any) -> dict[str, Any] | None:
    """OpenAI usage from Gemini's usage metadata: completion counts thinking tokens too."""
    if meta is None:
        return None
    prompt = (meta.prompt_token_count or 0) + (meta.tool_use_prompt_token_count or 0)
    thoughts = meta.thoughts_token_count
    completion = (meta.candidates_token_count or 0) + (thoughts or 0)
    return p.usage(prompt, completion, reasoning=thoughts, cached=meta.cached_content_token_count)


def candidate_index(candidate: types.Candidate, position: int) -> int:
    return candidate.index if candidate.index is not None else position


def choice_from(candidate: types.Candidate, index: int) -> dict[str, Any]:
    parts = (candidate.content.parts if candidate.content else None) or []
    calls = [tool_call(part) for part in parts if part.function_call is not None]
    text = answer_text(parts)
    content = text if text is not None else (None if calls else "")
    message = p.message(content, tool_calls=calls or None)
    return p.choice(
        index, message, finish_reason(candidate.finish_reason, bool(calls)), logprobs_from(candidate.logprobs_result)
    )


def completion_from(response: types.GenerateContentResponse, model: str) -> dict[str, Any]:
    """A whole `CreateChatCompletionResponse` from a Gemini answer."""
    raise_if_blocked(response)
    candidates = response.candidates or []
    if not candidates:
        raise UpstreamError("The gemini upstream answered without any candidate.")
    choices = sorted(
        (choice_from(c, candidate_index(c, i)) for i, c in enumerate(candidates)), key=lambda c: c["index"]
    )
    # No usage metadata: no usage here; the gateway counts the tokens itself and marks the log row.
    return p.completion(p.new_completion_id(), p.now(), model, choices, usage_from(response.usage_metadata))


@dataclass
class ChoiceState:
    """Where one choice of a stream stands."""

    started: bool = False
    calls: int = 0
    finished: bool = False
    text: list[str] = field(default_factory=list)


@dataclass
class StreamTranslator:
    """Turns Gemini stream chunks into OpenAI chunks, one Gemini chunk at a time (`base.StreamTranslator`)."""

    chunks: p.ChunkFactory
    choices: dict[int, ChoiceState] = field(default_factory=dict)
    usage_metadata: Any = None

    def feed(self, response: types.GenerateContentResponse) -> list[dict[str, Any]]:
        """The OpenAI chunks for one Gemini chunk (possibly none)."""
        if not self.choices:
            raise_if_blocked(response)
        if response.usage_metadata is not None:
            self.usage_metadata = response.usage_metadata  # cumulative: the last one is final
        out: list[dict[str, Any]] = []
        for position, candidate in enumerate(response.candidates or []):
            out.extend(self._candidate(candidate_index(candidate, position), candidate))
        return out

    def finish(self) -> list[dict[str, Any]]:
        """Close choices Gemini left open, then the usage chunk (last; absent when Gemini reported
        no usage, and the gateway counts the tokens itself)."""
        out = [self._delta(i, {}, "stop") for i, st in sorted(self.choices.items()) if not st.finished]
        usage = usage_from(self.usage_metadata)
        if usage:
            out.append(self.chunks.usage(usage))
        return out

    def _candidate(self, index: int, candidate: types.Candidate) -> list[dict[str, Any]]:
        state = self.choices.setdefault(index, ChoiceState())
        if state.finished:
            return []
        parts = (candidate.content.parts if candidate.content else None) or []
        out = []
        text = answer_text(parts)
        if text is not None:
            state.text.append(text)
            out.append(self._delta(index, {"content": text}, logprobs=logprobs_from(candidate.logprobs_result)))
        for part in parts:
            if part.function_call is not None:
                out.extend(self._tool_call(index, state, part))
        reason = candidate.finish_reason
        if reason is not None and _enum_name(reason) != "FINISH_REASON_UNSPECIFIED":
            out.append(self._delta(index, {}, finish_reason(reason, state.calls > 0)))
        return out

    def _tool_call(self, index: int, state: ChoiceState, part: types.Part) -> list[dict[str, Any]]:
        """OpenAI's incremental shape: id, type and name (and signature) first, then the arguments."""
        call = tool_call(part)
        head = {
            "index": state.calls,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        if "extra_content" in call:
            head["extra_content"] = call["extra_content"]
        tail = {"index": state.calls, "function": {"arguments": call["function"]["arguments"]}}
        state.calls += 1
        return [self._delta(index, {"tool_calls": [head]}), self._delta(index, {"tool_calls": [tail]})]

    def _delta(
        self, index: int, delta: dict[str, Any], finish: str | None = None, logprobs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        state = self.choices.setdefault(index, ChoiceState())
        if not state.started:
            state.started = True
            delta = {"role": "assistant", **delta}
        if finish is not None:
            state.finished = True
        return self.chunks.delta(index, delta, finish_reason=finish, logprobs=logprobs)


# ---- embeddings --------------------------------------------------------------------------------


def embedding_config(request: p.EmbeddingRequest) -> types.EmbedContentConfig | None:
    return types.EmbedContentConfig(output_dimensionality=request.dimensions) if request.dimensions else None


def unit_vector(values: Sequence[float]) -> list[float]:
    """L2-normalized, as OpenAI's embeddings are (Gemini's truncated ones are not)."""
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values] if norm else list(values)


def embeddings_from(vectors: list[list[float]], model: str, prompt_tokens: int | None) -> dict[str, Any]:
    """A `CreateEmbeddingResponse` with float vectors; no usage when Gemini reported none (the gateway counts)."""
    data = [{"object": "embedding", "index": i, "embedding": unit_vector(v)} for i, v in enumerate(vectors)]
    out: dict[str, Any] = {"object": "list", "data": data, "model": model}
    if prompt_tokens is not None:
        out["usage"] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return out


# ---- errors ------------------------------------------------------------------------------------


def _classes(name: str) -> tuple[type[BaseException], ...]:
    return tuple(getattr(module, name) for module in (httpx, httpx2) if module is not None)


TIMEOUTS = _classes("TimeoutException")
CONNECT_ERRORS = _classes("ConnectError")
TRANSPORT_ERRORS = _classes("TransportError")


def error_details(exc: genai_errors.APIError) -> list[dict[str, Any]]:
    """The `details` entries of Google's error envelope (ErrorInfo, RetryInfo, ...)."""
    body = exc.details if isinstance(exc.details, dict) else {}
    error = body.get("error", body)
    details = error.get("details") if isinstance(error, dict) else None
    return [d for d in details or [] if isinstance(d, dict)]


def retry_after_of(exc: genai_errors.APIError) -> str | None:
    """Seconds to wait: the Retry-After header, or Google's RetryInfo detail ("37s")."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is not None and headers.get("retry-after"):
        return str(headers.get("retry-after"))
    for detail in error_details(exc):
        delay = detail.get("retryDelay")
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return str(max(1, math.ceil(float(delay[:-1]))))
            except ValueError:
                continue
    return None


def from_api_error(exc: genai_errors.APIError) -> GatewayError:
    """A Gemini API error mapped by its HTTP status (a wrong key is a 401 whatever Gemini's status)."""
    status = exc.code if isinstance(exc.code, int) else 502
    reasons = {d.get("reason") for d in error_details(exc)}
    if reasons & BAD_KEY_REASONS:
        status = 401
    message = str(exc.message or exc.status or "no details")
    return from_upstream_status(status, message, provider=PROVIDER, retry_after=retry_after_of(exc))


def upstream_error(exc: Exception) -> GatewayError | None:
    """Gemini's one mapping of upstream failures: API errors by HTTP status, transport failures by kind."""
    if isinstance(exc, genai_errors.APIError):
        return from_api_error(exc)
    if isinstance(exc, TIMEOUTS):
        return upstream_timeout(PROVIDER, type(exc).__name__)
    if isinstance(exc, CONNECT_ERRORS):
        return upstream_unreachable(PROVIDER, str(exc) or type(exc).__name__)
    if isinstance(exc, TRANSPORT_ERRORS):
        return upstream_failure(f"The {PROVIDER} upstream connection failed: {str(exc) or type(exc).__name__}")
    if isinstance(exc, genai_errors.UnknownApiResponseError):
        return upstream_failure(f"The {PROVIDER} upstream sent an answer that is not valid JSON.")
    return None


# ---- I/O ---------------------------------------------------------------------------------------


def connect_timeout_hook(seconds: float) -> Any:
    """An httpx request hook: the SDK sets one timeout for everything; connecting gets its own."""

    async def hook(request: Any) -> None:
        request.extensions = {
            **request.extensions,
            "timeout": {**request.extensions.get("timeout", {}), "connect": seconds},
        }

    return hook


# The HTTP responses a stream opened, so that it can close them itself: the SDK nests several
# async generators around the response, and closing the outermost one leaves the connection
# open until the garbage collector breaks a reference cycle.
_OPENED: ContextVar[list[Any] | None] = ContextVar("gemini_opened_responses", default=None)


async def remember_response(response: Any) -> None:
    """An httpx response hook: note the response for the stream being opened, if any."""
    opened = _OPENED.get()
    if opened is not None:
        opened.append(response)


def http_options(route: Route) -> types.HttpOptions:
    """Timeouts (a generous read timeout; the gateway enforces first-byte and idle ones), no SDK retries."""
    read = max(route.first_byte_timeout, route.idle_timeout) + 5
    options = types.HttpOptions(
        timeout=int(read * 1000),
        retry_options=types.HttpRetryOptions(attempts=1),
        async_client_args={
            "event_hooks": {"request": [connect_timeout_hook(route.connect_timeout)], "response": [remember_response]},
            # An explicit transport keeps the SDK on httpx even where aiohttp is installed (it would switch
            # to aiohttp, and the hooks above, the stream closing and the error mapping are httpx's).
            "transport": httpx.AsyncHTTPTransport(),
        },
    )
    if route.base_url:
        base, version = split_api_version(route.base_url)
        options.base_url = base
        options.api_version = version
    return options


def split_api_version(base_url: str) -> tuple[str, str | None]:
    """A base URL given with the API version (`.../v1beta`) as the server root and that version."""
    base = base_url.rstrip("/")
    found = re.search(r"/(v1(?:alpha|beta)?)$", base)
    return (base[: found.start()], found.group(1)) if found else (base, None)


class GeminiProvider(Provider):
    name = "gemini"
    supported_params = frozenset(
        {
            "temperature",
            "top_p",
            "n",
            "stop",
            "max_tokens",
            "max_completion_tokens",
            "presence_penalty",
            "frequency_penalty",
            "seed",
            "logprobs",
            "top_logprobs",
            "response_format",
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "reasoning_effort",
            "service_tier",
            "modalities",
        }
    )

    def __init__(self, route: Route) -> None:
        super().__init__(route)
        self._client: genai.Client | None = None

    def _sdk(self) -> genai.Client:
        """The route's client, built on first use (a missing key is a 503 then, not at import)."""
        if self._client is None:
            keyed = dataclasses.replace(self.route, api_key_env=self.route.api_key_env or DEFAULT_KEY_ENV)
            key = keyed.require_credential()
            self._client = genai.Client(api_key=key, vertexai=False, http_options=http_options(self.route))
        return self._client

    def translate(self, request: p.ChatCompletionRequest) -> GeminiRequest:
        return to_gemini(request, self.route.upstream_model)

    async def complete(self, prepared: Prepared[GeminiRequest]) -> dict[str, Any]:
        gemini = prepared.payload
        client = self._sdk()
        with upstream_failures(upstream_error):
            response = await client.aio.models.generate_content(
                model=self.route.upstream_model, contents=gemini.contents, config=gemini.config
            )
        return completion_from(response, self.route.upstream_model)

    async def stream(self, prepared: Prepared[GeminiRequest]) -> AsyncIterator[dict[str, Any]]:
        gemini = prepared.payload
        client = self._sdk()
        translator = StreamTranslator(p.ChunkFactory(self.route.upstream_model))
        with upstream_failures(upstream_error):
            upstream = await client.aio.models.generate_content_stream(
                model=self.route.upstream_model, contents=gemini.contents, config=gemini.config
            )
        opened: list[Any] = []
        try:
            while True:
                token = _OPENED.set(opened)
                try:
                    with upstream_failures(upstream_error):
                        response = await upstream.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    _OPENED.reset(token)
                for chunk in translator.feed(response):
                    yield chunk
            for chunk in translator.finish():
                yield chunk
        finally:
            await close_stream(upstream, opened)

    async def embed(self, request: p.EmbeddingRequest) -> dict[str, Any]:
        texts = request.texts
        client = self._sdk()
        config = embedding_config(request)
        batches = [texts[i : i + EMBED_BATCH] for i in range(0, len(texts), EMBED_BATCH)]
        tasks = [asyncio.ensure_future(self._embed_batch(client, batch, config)) for batch in batches]
        try:
            with upstream_failures(upstream_error):
                responses = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()  # the other batches are useless once one failed
        vectors = [list(e.values or []) for r in responses for e in r.embeddings or []]
        if len(vectors) != len(texts):
            raise UpstreamError(f"The {PROVIDER} upstream returned {len(vectors)} embeddings for {len(texts)} inputs.")
        reported = [r.usage_metadata.prompt_token_count for r in responses if r.usage_metadata is not None]
        tokens = sum(t or 0 for t in reported) if len(reported) == len(responses) else None
        return embeddings_from(vectors, self.route.upstream_model, tokens)

    async def _embed_batch(
        self, client: genai.Client, texts: list[str], config: types.EmbedContentConfig | None
    ) -> types.EmbedContentResponse:
        # One Content per text: a bare list of strings would be merged into one input by multimodal models.
        contents = [types.Content(role="user", parts=[types.Part(text=text)]) for text in texts]
        return await client.aio.models.embed_content(model=self.route.upstream_model, contents=contents, config=config)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aio.aclose()


async def close_stream(upstream: Any, opened: list[Any]) -> None:
    """Cut the HTTP response at once, then let the SDK's generators unwind on the closed stream.

    Unwinding (rather than `aclose()` on the outermost generator) ends every generator the SDK
    nested, so none is left for the garbage collector to finalize later.
    """
    if not opened:  # no response to cut (it failed, or the SDK used a transport without hooks)
        try:
            await upstream.aclose()
        except Exception:
            pass
        return
    for response in opened:
        await response.aclose()
    try:
        while True:
            await upstream.__anext__()
    except Exception:
        pass
