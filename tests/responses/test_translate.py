"""The Responses <-> chat translation as pure functions: no server, no network."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from completions import protocol as p
from completions.errors import InvalidRequest, UpstreamError
from completions.responses import protocol as r
from completions.responses import store
from completions.responses.stream import ResponsesSSE
from completions.responses.translate import (
    Bridge,
    flat_name,
    seal,
    unseal,
    usage_of,
)
from tests.openapi import resolved_properties
from tests.responses.events import assert_valid_response

pytestmark = pytest.mark.django_db(databases=[])  # settings only (the signing key), no database

FN = {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}


def bridge(history: list[dict[str, Any]] | None = None, **body: Any) -> Bridge:
    request = p.validate(r.CreateResponseRequest, {"model": "m", "input": "hi", **body})
    return Bridge(request, history)


def chat(**body: Any) -> dict[str, Any]:
    return bridge(**body).chat_request.model_dump(exclude_unset=True, by_alias=True, mode="json")


def test_request_model_covers_every_documented_parameter() -> None:
    ours = {f.alias or name for name, f in r.CreateResponseRequest.model_fields.items()}
    documented = set(resolved_properties("CreateResponse"))
    assert documented - ours == set()
    assert ours - documented == {"client_metadata"}  # what Codex CLI sends beyond the spec


def test_string_input_and_instructions() -> None:
    assert chat(instructions="be brief")["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]


def test_items_become_messages_with_calls_merged_into_one_assistant_turn() -> None:
    body = chat(
        input=[
            {
                "type": "message",
                "id": "msg_1",
                "role": "developer",
                "content": [{"type": "input_text", "text": "rules"}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "original"},
                    {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,AAAA"},
                ],
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "ok", "annotations": []}],
            },
            {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "id": "fc_2", "call_id": "c2", "name": "f", "arguments": '{"a": 1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "two"}]},
        ],
        tools=[FN],
    )
    messages = body["messages"]
    assert [m["role"] for m in messages] == ["developer", "user", "assistant", "tool", "tool"]
    assert messages[0]["content"] == "rules"
    assert messages[1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AAAA", "detail": "high"},
    }
    assert messages[1]["content"][2]["file"]["filename"] == "a.pdf"
    assert messages[2]["content"] == "ok" and [c["id"] for c in messages[2]["tool_calls"]] == ["c1", "c2"]
    assert messages[4] == {"role": "tool", "tool_call_id": "c2", "content": "two"}


def test_parameters_map_to_chat() -> None:
    body = chat(
        max_output_tokens=100,
        temperature=0.5,
        top_p=0.9,
        reasoning={"effort": "low", "summary": "auto"},
        text={"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}, "strict": True}},
        metadata={"k": "v"},
        user="u",
        safety_identifier="s",
        prompt_cache_key="pk",
        include=["reasoning.encrypted_content", "message.output_text.logprobs"],
        top_logprobs=2,
        store=False,
        stream=True,
        client_metadata={"originator": "codex"},
    )
    assert body["max_completion_tokens"] == 100 and body["reasoning_effort"] == "low"
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": True},
    }
    assert (body["logprobs"], body["top_logprobs"]) == (True, 2)
    assert {k: body[k] for k in ("temperature", "top_p", "user", "safety_identifier", "prompt_cache_key")} == {
        "temperature": 0.5,
        "top_p": 0.9,
        "user": "u",
        "safety_identifier": "s",
        "prompt_cache_key": "pk",
    }
    assert "store" not in body and body["stream"] is True


def test_namespaces_flatten_and_come_back_unchanged() -> None:
    b = bridge(
        tools=[{"type": "namespace", "name": "multi_agent_v1", "tools": [{"type": "function", "name": "spawn_agent"}]}],
        tool_choice={"type": "function", "name": "spawn_agent", "namespace": "multi_agent_v1"},
    )
    sent = b.chat_request.model_dump(exclude_unset=True)
    assert sent["tools"][0]["function"]["name"] == "multi_agent_v1__spawn_agent"
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "multi_agent_v1__spawn_agent"}}
    item = b.function_item("fc_1", "call_1", "multi_agent_v1__spawn_agent", "{}")
    assert (item["name"], item["namespace"]) == ("spawn_agent", "multi_agent_v1")


def test_long_names_are_shortened_deterministically() -> None:
    long = flat_name("n" * 60, "tool")
    assert len(long) <= 64 and long == flat_name("n" * 60, "tool") != flat_name("n" * 60, "tool2")


def test_builtin_tools_are_dropped_with_a_warning() -> None:
    b = bridge(tools=[FN, {"type": "web_search", "external_web_access": False}], tool_choice="auto")
    assert [t.function.name for t in b.chat_request.tools or []] == ["f"]
    assert b.warnings and "web_search" in b.warnings[0]
    only_builtin = bridge(tools=[{"type": "web_search"}], tool_choice="auto", parallel_tool_calls=True)
    assert only_builtin.chat_request.tools is None and only_builtin.chat_request.tool_choice is None


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}}, "tool_choice"),
        ({"tools": [{"type": "file_search"}], "tool_choice": "required"}, "tool_choice"),
        ({"tools": [FN], "tool_choice": {"type": "function", "name": "g"}}, "tool_choice"),
        ({"tools": [{"type": "custom", "name": "c"}]}, "tools[0]"),
        ({"truncation": "auto"}, "truncation"),
        ({"background": True}, "background"),
        ({"prompt": {"id": "p"}}, "prompt"),
        ({"context_management": [{"type": "compaction"}]}, "context_management"),
        ({"reasoning": {"context": "all_turns"}}, "reasoning.context"),
        ({"service_tier": "ultrafast"}, "service_tier"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x/a.pdf"}]}]}, None),
        ({"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "x"}]}]}, None),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image"}]}]}, None),
    ],
)
def test_what_cannot_be_honoured_is_a_400_naming_it(body: dict[str, Any], param: str | None) -> None:
    with pytest.raises(InvalidRequest) as exc:
        bridge(**body)
    if param is None:
        assert exc.value.param is not None and exc.value.param.startswith("input[0].")
    else:
        assert exc.value.param == param


def test_provider_errors_are_renamed_to_responses_params() -> None:
    b = bridge(input=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], instructions="i")
    for chat_param, ours in [
        ("response_format", "text.format"),
        ("reasoning_effort", "reasoning.effort"),
        ("messages[2].content", "input[1]"),
        ("messages[0]", "instructions"),
    ]:
        with pytest.raises(InvalidRequest) as exc, b.client_params():
            raise InvalidRequest("`response_format` is not supported", param=chat_param)
        assert exc.value.param == ours and "`text.format`" in exc.value.message


def test_signed_reasoning_carries_provider_state_and_forgeries_do_not() -> None:
    extra = {"google": {"thought_signature": "c2ln"}}
    sealed = seal("c1", extra)
    assert unseal(sealed) == {"c1": extra}
    assert unseal(sealed[:-2] + "xx") == {} and unseal("not ours") == {} and unseal(None) == {}
    body = chat(
        input=[
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": sealed},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "x"},
        ]
    )
    assert body["messages"][0]["tool_calls"][0]["extra_content"] == extra


def test_history_comes_first_and_is_stored_with_ids() -> None:
    history = [
        {"id": "msg_a", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "one"}]},
        {
            "id": "msg_b",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "two", "annotations": []}],
        },
    ]
    b = bridge(history, input="three")
    assert [p.text_of(m.content) for m in b.chat_request.messages] == ["one", "two", "three"]
    stored = b.stored_input()
    assert [i["id"][:4] for i in stored] == ["msg_", "msg_", "msg_"] and stored[2]["content"][0]["text"] == "three"


def answer(message: dict[str, Any], finish: str = "stop", **usage: Any) -> dict[str, Any]:
    return p.completion("c", 1, "up-model", [p.choice(0, message, finish)], p.usage(7, 3, **usage))


def test_whole_answer_becomes_a_response() -> None:
    b = bridge(tools=[FN], metadata={"k": "v"})
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}, "extra_content": {"x": {}}}
    body = b.response(answer(p.message("thinking aloud", tool_calls=[call]), "tool_calls", cached=2, reasoning=1))
    assert_valid_response(body)
    assert [i["type"] for i in body["output"]] == ["message", "reasoning", "function_call"]
    assert unseal(body["output"][1]["encrypted_content"]) == {"c1": {"x": {}}}
    assert body["status"] == "completed" and body["model"] == "up-model" and body["metadata"] == {"k": "v"}
    assert body["usage"] == usage_of(p.usage(7, 3, cached=2, reasoning=1))
    assert body["usage"]["input_tokens_details"]["cached_tokens"] == 2
    assert body["usage"]["output_tokens_details"]["reasoning_tokens"] == 1


@pytest.mark.parametrize(
    ("finish", "status", "details"),
    [
        ("stop", "completed", None),
        ("length", "incomplete", {"reason": "max_output_tokens"}),
        ("content_filter", "incomplete", {"reason": "content_filter"}),
    ],
)
def test_finish_reasons_become_statuses(finish: str, status: str, details: Any) -> None:
    body = bridge().response(answer(p.message("x"), finish))
    assert (body["status"], body["incomplete_details"]) == (status, details)
    assert_valid_response(body)


def test_an_empty_answer_still_has_a_message() -> None:
    body = bridge().response(answer(p.message(""), "stop"))
    assert body["output"][0]["content"] == [{"type": "output_text", "text": "", "annotations": [], "logprobs": []}]


class Record:
    def __init__(self) -> None:
        self.failed: tuple[Any, ...] | None = None

    def fail(self, *args: Any) -> None:
        self.failed = args


def events_of(dialect: ResponsesSSE, chunks: list[dict[str, Any]], end: bool = True) -> list[dict[str, Any]]:
    data = b"".join(dialect.chunk(c) or b"" for c in chunks)
    if end:
        data += dialect.end(5, 4, False)
    from tests.responses.events import parse_sse

    return parse_sse(data.decode())


def test_stream_events_for_reasoning_text_and_calls() -> None:
    from tests.responses.events import assert_valid_stream

    b = bridge(tools=[FN])
    f = p.ChunkFactory("up-model")
    head = {
        "index": 0,
        "id": "c1",
        "type": "function",
        "function": {"name": "f", "arguments": ""},
        "extra_content": {"g": 1},
    }
    chunks = [
        f.delta(0, {"role": "assistant", "reasoning_content": "hmm"}),
        f.delta(0, {"content": "Hel"}),
        f.delta(0, {"content": "lo"}),
        f.delta(0, {"tool_calls": [head]}),
        f.delta(0, {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
        f.delta(0, {}, finish_reason="tool_calls"),
        f.usage(p.usage(5, 4, cached=1)),
    ]
    dialect = ResponsesSSE(b, Record())
    events = events_of(dialect, chunks)
    assert_valid_stream(events)
    kinds = [e["type"] for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
    ]
    assert "response.reasoning_summary_text.done" in kinds and kinds.count("response.output_text.delta") == 2
    assert kinds.index("response.function_call_arguments.done") < kinds.index("response.completed")
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["reasoning", "message", "reasoning", "function_call"]
    assert final["output"][0]["summary"] == [{"type": "summary_text", "text": "hmm"}]
    assert final["output"][1]["content"][0]["text"] == "Hello"
    assert unseal(final["output"][2]["encrypted_content"]) == {"c1": {"g": 1}}
    assert final["usage"]["input_tokens_details"]["cached_tokens"] == 1
    assert dialect.final == final


def test_a_stream_without_a_finish_fails_and_says_so_in_the_log() -> None:
    record = Record()
    f = p.ChunkFactory("m")
    events = events_of(ResponsesSSE(bridge(), record), [f.delta(0, {"content": "cut"})])
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["output"][0]["status"] == "completed"
    assert record.failed is not None and record.failed[2] == "stream_incomplete"


def test_an_error_mid_stream_ends_with_response_failed() -> None:
    f = p.ChunkFactory("m")
    dialect = ResponsesSSE(bridge(), Record())
    data = (dialect.chunk(f.delta(0, {"content": "par"})) or b"") + dialect.error(UpstreamError("boom"))
    from tests.responses.events import parse_sse

    events = parse_sse(data.decode())
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"] == {"code": "server_error", "message": "boom"}
    assert events[-1]["response"]["output"][0]["status"] == "incomplete"


def test_length_finish_is_incomplete_in_streams() -> None:
    f = p.ChunkFactory("m")
    events = events_of(
        ResponsesSSE(bridge(), Record()), [f.delta(0, {"content": "a"}), f.delta(0, {}, finish_reason="length")]
    )
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["output"][0]["status"] == "incomplete"


def test_input_item_pages() -> None:
    items = [{"id": f"i{n}"} for n in range(5)]
    first = store.page(items, limit=2, order="desc", after=None)
    assert [i["id"] for i in first["data"]] == ["i4", "i3"] and first["has_more"]
    rest = store.page(items, limit=10, order="desc", after="i3")
    assert [i["id"] for i in rest["data"]] == ["i2", "i1", "i0"] and not rest["has_more"]
    assert store.page(items, limit=1, order="asc", after=None)["first_id"] == "i0"
    with pytest.raises(Exception) as exc:
        store.page(items, limit=1, order="asc", after="nope")
    assert getattr(exc.value, "param", None) == "after"


def test_event_payloads_are_json() -> None:
    f = p.ChunkFactory("m")
    raw = ResponsesSSE(bridge(), Record()).chunk(f.delta(0, {"content": "x"})) or b""
    for block in raw.decode().strip().split("\n\n"):
        name, data = block.split("\n")
        assert orjson.loads(data.removeprefix("data: "))["type"] == name.removeprefix("event: ")


def test_an_empty_stream_still_has_a_message() -> None:
    from tests.responses.events import assert_valid_stream

    f = p.ChunkFactory("m")
    events = events_of(
        ResponsesSSE(bridge(), Record()), [f.delta(0, {"role": "assistant", "content": ""}), f.delta(0, {}, "stop")]
    )
    assert_valid_stream(events)
    (item,) = events[-1]["response"]["output"]
    assert item["type"] == "message" and item["content"][0]["text"] == ""
