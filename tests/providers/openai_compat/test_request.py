"""OpenAI-compatible, the upstream request bodies: pure, no network."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from completions.protocol import ChatCompletionRequest, EmbeddingRequest, validate
from completions.providers.openai_compat import OpenAICompatProvider, chat_body, embedding_body
from tests.fakes.openai_server import MODEL
from tests.providers.openai_compat.helpers import FULL_REQUEST, QUESTION, chat_request, route_for


def test_full_request_names_every_parameter() -> None:
    # Keeps the faithfulness test below honest when the request model grows.
    assert set(FULL_REQUEST) == set(ChatCompletionRequest.model_fields)


def test_chat_body_reproduces_the_client_json() -> None:
    request = validate(ChatCompletionRequest, FULL_REQUEST)
    body = chat_body(request, MODEL, stream=True)
    assert body == {**FULL_REQUEST, "model": MODEL}
    assert orjson.loads(orjson.dumps(body)) == body  # JSON-native all the way down
    # Unset defaults stay unset (no `detail: "auto"` invented), aliases and extensions survive.
    assert body["messages"][2]["content"][1]["image_url"] == {"url": "https://example.com/a.png"}
    assert (
        "schema" in body["response_format"]["json_schema"] and "schema_" not in body["response_format"]["json_schema"]
    )
    assert body["messages"][3]["tool_calls"][0]["extra_content"] == {"google": {"thought_signature": "c2lnbmF0dXJl"}}
    assert body["messages"][3]["content"] is None and body["messages"][7]["content"] is None


def test_chat_body_minimal_request_adds_nothing() -> None:
    assert chat_body(chat_request(), MODEL, stream=False) == {"model": MODEL, "messages": QUESTION}


@pytest.mark.parametrize(
    ("client_options", "expected"),
    [
        (None, {"include_usage": True}),
        ({"include_usage": False}, {"include_usage": True}),
        ({"include_obfuscation": True}, {"include_obfuscation": True, "include_usage": True}),
    ],
)
def test_stream_body_forces_include_usage(client_options: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"stream": True}
    if client_options is not None:
        fields["stream_options"] = client_options
    body = chat_body(chat_request(**fields), MODEL, stream=True)
    assert body["stream"] is True and body["stream_options"] == expected


def test_stream_body_can_leave_stream_options_alone() -> None:
    body = chat_body(chat_request(stream=True), MODEL, stream=True, force_usage=False)
    assert "stream_options" not in body


def test_embedding_body_asks_for_floats() -> None:
    request = validate(
        EmbeddingRequest, {"model": "e", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 3, "user": "u"}
    )
    assert embedding_body(request, MODEL) == {
        "model": MODEL,
        "input": ["a", "b"],
        "encoding_format": "float",
        "dimensions": 3,
        "user": "u",
    }
    tokens = validate(EmbeddingRequest, {"model": "e", "input": [[1, 2], [3]]})
    assert embedding_body(tokens, MODEL)["input"] == [[1, 2], [3]]


def test_every_parameter_is_left_to_the_upstream() -> None:
    provider = OpenAICompatProvider(route_for())
    provider.prepare(validate(ChatCompletionRequest, FULL_REQUEST))  # no InvalidRequest
    assert provider.supported_params == frozenset(ChatCompletionRequest.model_fields)
