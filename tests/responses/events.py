"""Checks for Responses API payloads: each stream event against its own schema in OpenAI's spec."""

from __future__ import annotations

import functools
from typing import Any

import orjson

from tests.openapi import assert_valid, resolved_properties, spec


@functools.cache
def event_schemas() -> dict[str, str]:
    """Event `type` -> the name of its schema, from the spec's `ResponseStreamEvent`."""
    schemas = spec()["components"]["schemas"]
    out = {}
    for branch in schemas["ResponseStreamEvent"]["anyOf"]:
        name = branch["$ref"].rsplit("/", 1)[-1]
        for kind in schemas[name]["properties"]["type"].get("enum", []):
            if kind is not None:
                out[kind] = name
    return out


def parse_sse(text: str) -> list[dict[str, Any]]:
    """The events of a Responses stream as sent (each with an `event:` line matching its `type`)."""
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        payload = orjson.loads(lines["data"])
        assert lines.get("event") == payload["type"], block
        events.append(payload)
    return events


def assert_valid_stream(events: list[dict[str, Any]]) -> None:
    """Every event valid against its schema; sequence numbers strictly increasing; one terminal event, last."""
    assert events, "no events"
    for payload in events:
        schema = event_schemas().get(payload["type"])
        assert schema, f"unknown event type {payload['type']}"
        if "response" in payload:
            # `Response` is an allOf of shared parts, which the strict check can't close: check the
            # event's own keys, then the response as `assert_valid_response` does.
            assert set(payload) == {"type", "sequence_number", "response"}
            assert_valid(payload, schema, strict=False)
            assert_valid_response(payload["response"])
        else:
            assert_valid(payload, schema)
    numbers = [e["sequence_number"] for e in events]
    assert numbers == sorted(set(numbers)), numbers
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    terminal = {"response.completed", "response.incomplete", "response.failed"}
    assert [e["type"] for e in events if e["type"] in terminal] == [events[-1]["type"]]
    assert events[-1]["type"] in terminal
    added = [e["item"]["id"] for e in events if e["type"] == "response.output_item.added"]
    done = [e["item"]["id"] for e in events if e["type"] == "response.output_item.done"]
    assert added == done, "every item added is done, in order"
    final = events[-1]["response"]
    assert [item["id"] for item in final["output"]] == done


def assert_valid_response(body: dict[str, Any]) -> None:
    """`Response`, strictly: no undocumented key, each output item and the usage checked on their own."""
    assert_valid(body, "Response", strict=False)
    assert set(body) - set(resolved_properties("Response")) == set(), "undocumented keys"
    for item in body["output"]:
        assert_valid(item, "OutputItem")
    if body.get("usage") is not None:
        assert_valid(body["usage"], "ResponseUsage")
    assert_valid(body["text"], "ResponseTextParam")
