"""Helpers shared by the OpenAI-compatible provider tests: requests, routes, running a provider on the fake."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from completions.protocol import ChatCompletionRequest, validate
from completions.providers.base import Route
from completions.providers.openai_compat import OpenAICompatProvider, StreamTranslator
from tests.fakes.openai_server import MODEL, FakeOpenAI

QUESTION = [{"role": "user", "content": "Say hello."}]
KEY_ENV = "TEST_OPENAI_KEY"
KEY = "sk-upstream-test"
# Every parameter of CreateChatCompletionRequest, with nested models, aliases and explicit nulls.
FULL_REQUEST: dict[str, Any] = {
    "model": "oai-test",
    "messages": [
        {"role": "system", "content": "Be brief.", "name": "sys"},
        {
            "role": "developer",
            "content": [{"type": "text", "text": "Rules.", "prompt_cache_breakpoint": {"mode": "explicit"}}],
        },
        {
            "role": "user",
            "name": "ann",
            "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    "extra_content": {"google": {"thought_signature": "c2lnbmF0dXJl"}},
                },
                {"id": "call_2", "type": "custom", "custom": {"name": "sql", "input": "SELECT 1"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "1"}]},
        {
            "role": "assistant",
            "content": [{"type": "refusal", "refusal": "no"}],
            "refusal": "no",
            "audio": {"id": "audio_1"},
        },
        {"role": "function", "name": "legacy", "content": None},
        {"role": "user", "content": "And now?"},
    ],
    "metadata": {"team": "search"},
    "temperature": 0.7,
    "top_p": 0.9,
    "n": 2,
    "stream": True,
    "stream_options": {"include_usage": True, "include_obfuscation": False},
    "stop": ["END", "STOP"],
    "max_tokens": 100,
    "max_completion_tokens": 120,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
    "logit_bias": {"50256": -100},
    "logprobs": True,
    "top_logprobs": 3,
    "seed": 7,
    "user": "user-1",
    "safety_identifier": "hashed-user",
    "prompt_cache_key": "pck",
    "prompt_cache_retention": "24h",
    "prompt_cache_options": {"ttl": "1h"},
    "response_format": {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "strict": True,
            "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
        },
    },
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "strict": True,
                "parameters": {"type": "object"},
            },
        },
        {"type": "custom", "custom": {"name": "sql", "format": {"type": "text"}}},
    ],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "parallel_tool_calls": False,
    "functions": [{"name": "legacy", "parameters": {"type": "object"}}],
    "function_call": {"name": "legacy"},
    "service_tier": "flex",
    "modalities": ["text", "audio"],
    "audio": {"voice": "alloy", "format": "mp3"},
    "verbosity": "low",
    "reasoning_effort": "high",
    "web_search_options": {"search_context_size": "low", "user_location": {"type": "approximate"}},
    "store": False,
    "moderation": {"model": "omni-moderation-latest"},
    "prediction": {"type": "content", "content": "draft"},
}


def chat_request(**fields: Any) -> ChatCompletionRequest:
    return validate(ChatCompletionRequest, {"model": "oai-test", "messages": QUESTION, **fields})


def route_for(fake: FakeOpenAI | None = None, **fields: Any) -> Route:
    values: dict[str, Any] = {
        "model_name": "oai-test",
        "provider": "openai",
        "upstream_model": MODEL,
        "base_url": (fake.url + "/v1") if fake else "",
        "api_key_env": KEY_ENV,
    }
    values.update(fields)
    return Route(**values)


def run(make: Callable[[OpenAICompatProvider], Any], route: Route) -> Any:
    """Run `make(provider)` on a fresh provider in a fresh event loop, closing the provider after."""

    async def go() -> Any:
        provider = OpenAICompatProvider(route)
        try:
            return await make(provider)
        finally:
            await provider.aclose()

    return asyncio.run(go())


async def drain(stream: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c async for c in stream]


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.02)


def sse(*events: Any) -> bytes:
    out = b""
    for event in events:
        out += b"data: " + (event.encode() if isinstance(event, str) else orjson.dumps(event)) + b"\n\n"
    return out


def read_all(raw: bytes, reader: StreamTranslator | None = None) -> list[dict[str, Any]]:
    reader = reader or StreamTranslator()
    return reader.feed(raw) + reader.finish()
