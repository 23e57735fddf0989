"""The offline, deterministic mock model.

It echoes the last user message (or the last tool result), streams it word by
word, honours `max_tokens` (finish `length`), `stop`, `n`, `logprobs`,
`response_format` `json_object` (`{"echo": text}`) and `json_schema` (a value
fitting the schema, strings holding the text) and function tools, and counts tokens the same
way in both modes. Tool calls: with `tool_choice` "required" or a named
function it calls that tool; with "auto" it calls the first tool whose name
appears in the user's message. Route options `latency_ms` (before the answer)
and `chunk_delay_ms` (between stream chunks) simulate a slow upstream; both
default to 0.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from .. import protocol as p
from ..tokens import count_prompt, count_tokens, split_tokens
from .base import Prepared, Provider, invalid


@dataclass(frozen=True)
class Answer:
    """What the mock says for one choice."""

    tokens: list[str]
    finish_reason: str
    tool_call: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def completion_tokens(self) -> int:
        if self.tool_call:
            fn = self.tool_call["function"]
            return count_tokens(fn["name"]) + count_tokens(fn["arguments"])
        return len(self.tokens)


def last_turn_text(request: p.ChatCompletionRequest) -> tuple[str, str]:
    """The text to echo and the role it came from (`user` or `tool`)."""
    trailing_tools = []
    for message in reversed(request.messages):
        if isinstance(message, p.ToolMessage):
            trailing_tools.append(p.text_of(message.content))
            continue
        break
    if trailing_tools:
        return "\n".join(reversed(trailing_tools)), "tool"
    for message in reversed(request.messages):
        if isinstance(message, p.UserMessage):
            return p.text_of(message.content), "user"
    return "", "user"


def pick_tool(request: p.ChatCompletionRequest, text: str) -> p.FunctionDefinition | None:
    """The function the mock calls, if any."""
    functions = [t.function for t in request.tools or [] if isinstance(t, p.FunctionTool)]
    if not functions or request.tool_choice == "none":
        return None
    choice = request.tool_choice
    if isinstance(choice, p.NamedToolChoice):
        return next(f for f in functions if f.name == choice.function.name)
    if isinstance(choice, p.AllowedToolsChoice):
        allowed = {(t.get("function") or {}).get("name") for t in choice.allowed_tools.tools}
        functions = [f for f in functions if f.name in allowed]
        if choice.allowed_tools.mode == "required":
            return functions[0] if functions else None
    if choice == "required":
        return functions[0]
    return next((f for f in functions if f.name in text), None)


def sample_arguments(fn: p.FunctionDefinition, text: str) -> dict[str, Any]:
    """Arguments that fit the function's schema: strings get the user's text."""
    schema = fn.parameters or {}
    props: dict[str, Any] = schema.get("properties") or {}
    wanted = schema.get("required") or list(props)
    defaults = {"string": text, "number": 0, "integer": 0, "boolean": False, "array": [], "object": {}}
    out: dict[str, Any] = {}
    for name in wanted:
        spec = props.get(name) or {}
        if spec.get("enum"):
            out[name] = spec["enum"][0]
        else:
            kind = spec.get("type", "string")
            out[name] = defaults.get(kind if isinstance(kind, str) else kind[0], text)
    return out


def sample_value(schema: dict[str, Any], text: str, depth: int = 0) -> Any:
    """A value that fits a JSON schema (for `json_schema` output): strings get the user's text."""
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "object" if "properties" in schema else "string")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object" and depth < 8:
        props: dict[str, Any] = schema.get("properties") or {}
        return {name: sample_value(props[name] or {}, text, depth + 1) for name in props}
    defaults = {"string": text, "number": 0, "integer": 0, "boolean": False, "array": [], "null": None}
    return defaults.get(kind, {})


# Like a real model's output limit: past it, the answer is cut with finish_reason "length".
MAX_OUTPUT_TOKENS = 4096
# The most tokens one request may make the mock produce over all its `n` choices.
MAX_TOTAL_OUTPUT_TOKENS = 32_768
# Embeddings with more values than this are computed on a worker thread, not the event loop.
INLINE_EMBEDDING_VALUES = 65_536


def answer(request: p.ChatCompletionRequest, max_output_tokens: int = MAX_OUTPUT_TOKENS) -> Answer:
    """The deterministic answer to `request`."""
    text, source = last_turn_text(request)
    if source == "user":
        fn = pick_tool(request, text)
        if fn is not None:
            call = {
                "id": p.random_id("call_"),
                "type": "function",
                "function": {"name": fn.name, "arguments": orjson.dumps(sample_arguments(fn, text)).decode()},
            }
            return Answer(tokens=[], finish_reason="tool_calls", tool_call=call)
    if isinstance(request.response_format, p.ResponseFormatJsonObject):
        text = orjson.dumps({"echo": text}).decode()
    elif isinstance(request.response_format, p.ResponseFormatJsonSchema):
        text = orjson.dumps(sample_value(request.response_format.json_schema.schema_ or {}, text)).decode()
    finish = "stop"
    for stop in request.stop_sequences:
        cut = text.find(stop)
        if cut != -1:
            text = text[:cut]
    tokens = split_tokens(text)
    limit = min(request.output_limit or max_output_tokens, max_output_tokens)
    if len(tokens) > limit:
        tokens = tokens[:limit]
        finish = "length"
    return Answer(tokens=tokens, finish_reason=finish)


def token_logprobs(tokens: list[str], top: int | None) -> dict[str, Any]:
    """A deterministic model is certain of each token: log probability 0."""
    entries = []
    for token in tokens:
        raw = list(token.encode())
        alternatives = [{"token": token, "logprob": 0.0, "bytes": raw}] if top else []
        entries.append({"token": token, "logprob": 0.0, "bytes": raw, "top_logprobs": alternatives})
    return {"content": entries, "refusal": None}


class MockProvider(Provider):
    name = "mock"
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
            "service_tier",
            "reasoning_effort",
            "verbosity",
            "prompt_cache_key",
            "prompt_cache_retention",
            "prompt_cache_options",
        }
    )

    def translate(self, request: p.ChatCompletionRequest) -> Answer:
        """The answer, worked out once; refused before any work if its `n` choices are too large."""
        ans = answer(request, int(self.route.options.get("max_output_tokens", MAX_OUTPUT_TOKENS)))
        if ans.completion_tokens * request.choices > MAX_TOTAL_OUTPUT_TOKENS:
            raise invalid(
                "n",
                f"{request.choices} choices of {ans.completion_tokens} tokens is more than the "
                f"{MAX_TOTAL_OUTPUT_TOKENS} output tokens the mock model produces for one request: lower `n` "
                "or `max_tokens`.",
            )
        return ans

    @property
    def _latency(self) -> float:
        return float(self.route.options.get("latency_ms", 0)) / 1000

    @property
    def _chunk_delay(self) -> float:
        return float(self.route.options.get("chunk_delay_ms", 0)) / 1000

    def _usage(self, request: p.ChatCompletionRequest, ans: Answer) -> dict[str, Any]:
        return p.usage(count_prompt(request.messages), ans.completion_tokens * request.choices)

    async def complete(self, prepared: Prepared[Answer]) -> dict[str, Any]:
        request, ans = prepared.request, prepared.payload
        if self._latency:
            await asyncio.sleep(self._latency)
        choices = []
        for index in range(request.choices):
            msg = p.message(None, tool_calls=[ans.tool_call]) if ans.tool_call else p.message(ans.text)
            logprobs = token_logprobs(ans.tokens, request.top_logprobs) if request.logprobs else None
            choices.append(p.choice(index, msg, ans.finish_reason, logprobs))
        return p.completion(
            p.new_completion_id(), p.now(), self.route.upstream_model, choices, self._usage(request, ans)
        )

    async def stream(self, prepared: Prepared[Answer]) -> AsyncIterator[dict[str, Any]]:
        request, ans = prepared.request, prepared.payload
        if self._latency:
            await asyncio.sleep(self._latency)
        chunks = p.ChunkFactory(self.route.upstream_model)
        delay = self._chunk_delay
        for index in range(request.choices):
            if ans.tool_call:
                fn = ans.tool_call["function"]
                head = {
                    "index": 0,
                    "id": ans.tool_call["id"],
                    "type": "function",
                    "function": {"name": fn["name"], "arguments": ""},
                }
                yield chunks.delta(index, {"role": "assistant", "content": None, "tool_calls": [head]})
                yield chunks.delta(index, {"tool_calls": [{"index": 0, "function": {"arguments": fn["arguments"]}}]})
            else:
                yield chunks.delta(index, {"role": "assistant", "content": ""})
                for token in ans.tokens:
                    if delay:
                        await asyncio.sleep(delay)
                    logprobs = token_logprobs([token], request.top_logprobs) if request.logprobs else None
                    yield chunks.delta(index, {"content": token}, logprobs=logprobs)
            yield chunks.delta(index, {}, finish_reason=ans.finish_reason)
        yield chunks.usage(self._usage(request, ans))

    async def embed(self, request: p.EmbeddingRequest) -> dict[str, Any]:
        """Deterministic unit vectors derived from each text's hash (same text, same vector)."""
        texts = request.texts
        dims = request.dimensions or 16
        if len(texts) * dims > INLINE_EMBEDDING_VALUES:
            vectors = await asyncio.to_thread(hashed_vectors, texts, dims)  # heavy CPU: off the event loop
        else:
            vectors = hashed_vectors(texts, dims)
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        tokens = sum(count_tokens(t) for t in texts)
        return {
            "object": "list",
            "data": data,
            "model": self.route.upstream_model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def hashed_vectors(texts: list[str], dims: int) -> list[list[float]]:
    return [hashed_vector(t, dims) for t in texts]


def hashed_vector(text: str, dims: int) -> list[float]:
    """A unit vector of `dims` floats seeded by the text's SHA-256."""
    raw: list[float] = []
    counter = 0
    while len(raw) < dims:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        raw.extend((b - 127.5) / 127.5 for b in digest)
        counter += 1
    raw = raw[:dims]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]
