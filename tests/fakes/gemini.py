"""A fake Gemini API (generateContent, streamGenerateContent?alt=sse, batchEmbedContents, embedContent).

Close enough to the real one for the google-genai SDK: paths under
`/v1/models/{model}:{method}` (v1beta too), the key in `x-goog-api-key` (a
wrong key gets Gemini's own 400 API_KEY_INVALID), camelCase JSON, streams as
`data: <json>` events. Without a scripted reply it echoes the last user text.
The helpers below build Gemini JSON answers for scripts.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from tests.fakes.base import FakeUpstream, Recorded, Reply

PATH = re.compile(r"^/(v1|v1beta|v1alpha)/models/([^/:]+):(\w+)$")
METHODS = frozenset({"generateContent", "streamGenerateContent", "embedContent", "batchEmbedContents"})


# ---- answer builders ----------------------------------------------------------------------


def text_part(text: str, *, thought: bool = False, signature: bytes | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"text": text}
    if thought:
        part["thought"] = True
    if signature is not None:
        part["thoughtSignature"] = base64.b64encode(signature).decode()
    return part


def call_part(name: str, args: dict[str, Any], *, signature: bytes | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
    if signature is not None:
        part["thoughtSignature"] = base64.b64encode(signature).decode()
    return part


def candidate(
    *parts: dict[str, Any], finish: str | None = "STOP", index: int | None = 0, logprobs: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}}
    if finish is not None:
        out["finishReason"] = finish
    if index is not None:
        out["index"] = index
    if logprobs is not None:
        out["logprobsResult"] = logprobs
    return out


def usage(
    prompt: int, candidates: int | None, *, thoughts: int | None = None, cached: int | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"promptTokenCount": prompt}
    if candidates is not None:
        out["candidatesTokenCount"] = candidates
    if thoughts is not None:
        out["thoughtsTokenCount"] = thoughts
    if cached is not None:
        out["cachedContentTokenCount"] = cached
    out["totalTokenCount"] = prompt + (candidates or 0) + (thoughts or 0)
    return out


def response(*candidates: dict[str, Any], usage_: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A GenerateContentResponse (also one stream chunk)."""
    out: dict[str, Any] = {
        "candidates": list(candidates),
        "modelVersion": "gemini-2.5-flash",
        "responseId": "fake-resp",
    }
    if usage_ is not None:
        out["usageMetadata"] = usage_
    out.update(extra)
    return out


def text_response(text: str, *, finish: str = "STOP", prompt: int = 5, completion: int = 3) -> dict[str, Any]:
    return response(candidate(text_part(text), finish=finish), usage_=usage(prompt, completion))


def blocked_response(reason: str = "SAFETY", message: str | None = None) -> dict[str, Any]:
    feedback: dict[str, Any] = {"blockReason": reason}
    if message:
        feedback["blockReasonMessage"] = message
    return {"promptFeedback": feedback, "usageMetadata": usage(7, None), "modelVersion": "gemini-2.5-flash"}


def logprobs_result(
    chosen: list[tuple[str, float]], top: list[list[tuple[str, float]]] | None = None
) -> dict[str, Any]:
    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logProbability": logprob} if logprob else {"token": token}

    out: dict[str, Any] = {"chosenCandidates": [entry(t, lp) for t, lp in chosen]}
    if top is not None:
        out["topCandidates"] = [{"candidates": [entry(t, lp) for t, lp in step]} for step in top]
    return out


def error(code: int, status: str, message: str, *details: dict[str, Any]) -> dict[str, Any]:
    """Google's error envelope."""
    body: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        body["details"] = list(details)
    return {"error": body}


def error_reply(
    code: int, status: str, message: str, *details: dict[str, Any], headers: dict[str, str] | None = None
) -> Reply:
    return Reply(status=code, json=error(code, status, message, *details), headers=headers or {})


def bad_key_error() -> dict[str, Any]:
    """What Gemini answers (with HTTP 400) to a wrong API key."""
    return error(
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"},
    )


def embed_response(vectors: list[list[float]], prompt_tokens: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"embeddings": [{"values": v} for v in vectors]}
    if prompt_tokens is not None:
        out["usageMetadata"] = {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}
    return out


def decoded_signature(part: dict[str, Any]) -> bytes:
    """The bytes of a part's thoughtSignature (the SDK sends the URL-safe alphabet)."""
    return base64.urlsafe_b64decode(part["thoughtSignature"] + "=" * (-len(part["thoughtSignature"]) % 4))


# ---- reading what the SDK sent ------------------------------------------------------------

# Values that are the client's own data (schemas, arguments), never renamed.
OPAQUE = frozenset({"args", "response", "parameters", "parametersJsonSchema", "responseJsonSchema", "responseSchema"})


def camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def canonical(node: Any) -> Any:
    """A request body with every Gemini field name in camelCase (the SDK sends some in snake_case,
    which Gemini's JSON parser accepts too), the client's own data left alone."""
    if isinstance(node, list):
        return [canonical(item) for item in node]
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            name = camel(key)
            out[name] = value if name in OPAQUE else canonical(value)
        return out
    return node


# ---- the server ---------------------------------------------------------------------------


def last_user_text(body: dict[str, Any]) -> str:
    for content in reversed(body.get("contents") or []):
        if content.get("role", "user") == "user":
            return "".join(part.get("text", "") for part in content.get("parts", []))
    return ""


class FakeGemini(FakeUpstream):
    """Gemini's REST API, scripted; `requests[-1].json` is the body the SDK sent."""

    def __init__(self, api_key: str | None = "test-key") -> None:
        super().__init__()
        self.api_key = api_key

    @staticmethod
    def call_of(request: Recorded) -> tuple[str, str] | None:
        """(model, method) of a request path, if it is a Gemini model call."""
        match = PATH.match(request.path)
        return (match.group(2), match.group(3)) if match and match.group(3) in METHODS else None

    def gemini_requests(self, method: str) -> list[Recorded]:
        return [r for r in self.requests if (self.call_of(r) or ("", ""))[1] == method]

    def next_reply(self, request: Recorded) -> Reply:
        call = self.call_of(request)
        if call is None or request.method != "POST":
            return error_reply(404, "NOT_FOUND", f"Method not found: {request.method} {request.path}")
        if self.api_key is not None and request.headers.get("x-goog-api-key") != self.api_key:
            return Reply(status=400, json=bad_key_error())
        if call[1] == "streamGenerateContent" and request.query.get("alt") != ["sse"]:
            return error_reply(400, "INVALID_ARGUMENT", "this fake streams only with alt=sse")
        return super().next_reply(request)

    def default_reply(self, request: Recorded) -> Reply:
        _, method = self.call_of(request) or ("", "")
        body = request.json or {}
        if method == "generateContent":
            return Reply(json=text_response("echo: " + last_user_text(body)))
        if method == "streamGenerateContent":
            words = ("echo: " + last_user_text(body)).split(" ")
            chunks = [response(candidate(text_part(w + " "), finish=None), usage_=usage(5, None)) for w in words[:-1]]
            chunks.append(response(candidate(text_part(words[-1])), usage_=usage(5, len(words))))
            return Reply(events=chunks)
        if method == "batchEmbedContents":
            return Reply(
                json=embed_response([[float(i + 1), 0.0, 0.0] for i, _ in enumerate(body.get("requests", []))])
            )
        return Reply(json={"embedding": {"values": [1.0, 0.0, 0.0]}})
