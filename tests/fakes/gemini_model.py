"""A fake Gemini that answers like a model, for driving real client libraries through the gateway.

On top of `FakeGemini` (the wire protocol), it decides what to say from the request, as a model would:

- the last turn holds function responses: it answers in text with the first result
  (`The tool said: …`);
- functions are declared (and the mode is not NONE): it calls the first allowed function twice, in
  parallel (Gemini does), with arguments built from its parameter schema; the first call carries a
  thought signature (`SIGNATURE`), as Gemini 3 puts it on the first call of a step;
- a response schema is set: JSON built from the schema (strings get the user's text);
- JSON output without a schema: `{"echo": …}`;
- otherwise `echo: <the user's text>`.

Streams send the text word by word and the calls in one chunk, with the finish reason and usage last.
"""

from __future__ import annotations

import json
from typing import Any

from completions.providers.schema_instance import instance
from tests.fakes.base import Recorded, Reply
from tests.fakes.gemini import FakeGemini, call_part, candidate, canonical, last_user_text, response, text_part, usage

SIGNATURE = b"gemini-fake-thought-signature"


def declared_functions(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [fn for tool in body.get("tools") or [] for fn in tool.get("functionDeclarations") or []]


def function_results(body: dict[str, Any]) -> list[Any]:
    last = (body.get("contents") or [{}])[-1]
    return [part["functionResponse"]["response"] for part in last.get("parts") or [] if "functionResponse" in part]


def chosen_function(body: dict[str, Any]) -> dict[str, Any] | None:
    """The function the model calls: the first allowed one, unless calling is off."""
    functions = declared_functions(body)
    calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    if not functions or calling.get("mode") == "NONE":
        return None
    allowed = calling.get("allowedFunctionNames")
    return next((fn for fn in functions if not allowed or fn["name"] in allowed), None)


def arguments(fn: dict[str, Any], text: str) -> Any:
    schema = fn.get("parametersJsonSchema") or fn.get("parameters") or {"type": "object"}
    return instance({"type": "object", **schema}, text)


class ModelGemini(FakeGemini):
    """Gemini's wire protocol, answering each request as a (very simple) model would."""

    def answer_parts(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        text = last_user_text(body)
        results = function_results(body)
        if results:
            return [text_part(f"The tool said: {json.dumps(results[0].get('result', results[0]))}")]
        fn = chosen_function(body)
        if fn is not None:
            first = call_part(fn["name"], arguments(fn, text), signature=SIGNATURE)
            return [first, call_part(fn["name"], arguments(fn, text + " too"))]
        config = body.get("generationConfig") or {}
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        if schema is not None:
            return [text_part(json.dumps(instance(schema, text)))]
        if config.get("responseMimeType") == "application/json":
            return [text_part(json.dumps({"echo": text}))]
        return [text_part("echo: " + text)]

    def default_reply(self, request: Recorded) -> Reply:
        _, method = self.call_of(request) or ("", "")
        if method not in ("generateContent", "streamGenerateContent"):
            return super().default_reply(request)
        parts = self.answer_parts(canonical(request.json or {}))
        spent = usage(12, sum(len(p.get("text", "").split()) + 2 for p in parts))
        if method == "generateContent":
            return Reply(json=response(candidate(*parts), usage_=spent))
        if "text" not in parts[0]:  # function calls come in one chunk
            return Reply(events=[response(candidate(*parts), usage_=spent)])
        words = parts[0]["text"].split(" ")
        chunks = [response(candidate(text_part(w + " "), finish=None), usage_=usage(12, None)) for w in words[:-1]]
        chunks.append(response(candidate(text_part(words[-1])), usage_=spent))
        return Reply(events=chunks)
