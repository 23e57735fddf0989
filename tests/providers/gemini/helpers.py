"""Helpers shared by the Gemini provider tests: request builders, routes, and what the fake received."""

from __future__ import annotations

import base64
from typing import Any

import httpx
from google.genai import types

from completions import protocol as p
from completions.providers.base import Route
from completions.providers.gemini import to_gemini
from tests.fakes.gemini import FakeGemini, canonical

SIGNATURE = b"\xfb\xff\xfe-sig-\x00\x01\xfa"  # differs between the standard and URL-safe alphabets
KEY_ENV = "TEST_GEMINI_KEY"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
PNG = b"\x89PNG\r\n\x1a\n\xfb\xff"
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


def chat(**body: Any) -> p.ChatCompletionRequest:
    body.setdefault("model", "gem")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return p.validate(p.ChatCompletionRequest, body)


def wire(request: p.ChatCompletionRequest, model: str = "gemini-2.5-flash") -> dict[str, Any]:
    """The Gemini request (contents and config) as plain data, for comparisons."""
    gemini = to_gemini(request, model)
    return {
        "contents": [c.model_dump(exclude_none=True) for c in gemini.contents],
        "config": gemini.config.model_dump(exclude_none=True),
    }


def gemini_response(payload: dict[str, Any]) -> types.GenerateContentResponse:
    return types.GenerateContentResponse.model_validate(payload)


def route(**fields: Any) -> Route:
    base = {"model_name": "gem", "provider": "gemini", "upstream_model": "gemini-2.5-flash", "api_key_env": KEY_ENV}
    return Route(**{**base, **fields})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4))


def sent(fake: FakeGemini) -> dict[str, Any]:
    """The last body the SDK sent, field names normalized."""
    return canonical(fake.requests[-1].json)


def sse_payloads(response: httpx.Response) -> list[str]:
    return [event[len("data: ") :] for event in response.read().decode().split("\n\n") if event]
