"""The schema-driven instance generator: every instance validates (jsonschema, formats checked),
over hand-written schemas and the shapes pydantic, openai's helpers, instructor and zod produce."""

from __future__ import annotations

import datetime as dt
import enum
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.validators import validator_for
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field

from completions.providers.schema_instance import instance, regex_example, resolve

TEXT = "Ann is 3"
FIXTURES = Path(__file__).parent / "fixtures"


def assert_instance_valid(schema: dict[str, Any] | bool, text: str = TEXT) -> Any:
    value = instance(schema, text)
    json.dumps(value)  # plain JSON
    validator = validator_for(schema, default=Draft202012Validator)  # the draft its `$schema` names
    errors = list(validator(schema, format_checker=FormatChecker()).iter_errors(value))
    assert not errors, f"{value!r} is not valid: {[e.message for e in errors]}"
    assert instance(schema, text) == value  # deterministic
    return value


HAND_WRITTEN: dict[str, dict[str, Any]] = {
    "scalars": {
        "type": "object",
        "properties": {
            "s": {"type": "string"},
            "i": {"type": "integer"},
            "n": {"type": "number"},
            "b": {"type": "boolean"},
            "z": {"type": "null"},
        },
        "required": ["s", "i", "n", "b", "z"],
        "additionalProperties": False,
    },
    "enum_and_const": {
        "type": "object",
        "properties": {
            "colour": {"type": "string", "enum": ["red", "green"]},
            "level": {"enum": [3, 4]},
            "kind": {"const": "fixed"},
            "maybe": {"enum": [None, "x"]},
        },
        "required": ["colour", "level", "kind", "maybe"],
    },
    "nested_objects_and_arrays": {
        "type": "object",
        "properties": {
            "owner": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "langs": {"type": "array", "items": {"type": "string"}}},
                "required": ["name", "langs"],
                "additionalProperties": False,
            },
            "matrix": {
                "type": "array",
                "minItems": 2,
                "items": {"type": "array", "minItems": 2, "items": {"type": "integer", "minimum": 5}},
            },
            "points": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]},
            },
        },
        "required": ["owner", "matrix", "points"],
        "additionalProperties": False,
    },
    "defs_and_refs": {
        "$defs": {
            "Address": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "Kind": {"type": "string", "enum": ["home", "work"]},
        },
        "type": "object",
        "properties": {
            "home": {"$ref": "#/$defs/Address"},
            "kind": {"$ref": "#/$defs/Kind"},
            "others": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/Address"}},
        },
        "required": ["home", "kind", "others"],
    },
    "definitions_draft7": {
        "definitions": {"Id": {"type": "integer", "minimum": 10}},
        "type": "object",
        "properties": {"id": {"$ref": "#/definitions/Id"}},
        "required": ["id"],
    },
    "recursive_tree": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#"}}},
        "required": ["name", "children"],
    },
    "recursive_list_through_nullable_ref": {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "value": {"type": "integer"},
                    "next": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]},
                },
                "required": ["value", "next"],
            }
        },
        "$ref": "#/$defs/Node",
    },
    "nullable_unions": {
        "type": "object",
        "properties": {
            "a": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "b": {"type": ["null", "integer"]},
            "c": {
                "anyOf": [
                    {"type": "null"},
                    {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]},
                ]
            },
            "d": {"oneOf": [{"type": "null"}, {"type": "boolean"}]},
        },
        "required": ["a", "b", "c", "d"],
    },
    "discriminated_one_of": {
        "type": "object",
        "properties": {
            "pet": {
                "oneOf": [
                    {
                        "type": "object",
                        "properties": {"kind": {"const": "cat"}, "lives": {"type": "integer"}},
                        "required": ["kind", "lives"],
                        "additionalProperties": False,
                    },
                    {
                        "type": "object",
                        "properties": {"kind": {"const": "dog"}, "good": {"type": "boolean"}},
                        "required": ["kind", "good"],
                        "additionalProperties": False,
                    },
                ]
            }
        },
        "required": ["pet"],
    },
    "all_of_merged": {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"properties": {"b": {"type": "integer", "minimum": 2}}, "required": ["b"]},
            {"properties": {"b": {"maximum": 9}}},
        ]
    },
    "additional_properties": {
        "type": "object",
        "properties": {"known": {"type": "string"}},
        "required": ["known", "extra"],
        "additionalProperties": {"type": "integer", "minimum": 1},
        "minProperties": 3,
    },
    "strings": {
        "type": "object",
        "properties": {
            "short": {"type": "string", "maxLength": 3},
            "long": {"type": "string", "minLength": 20},
            "zip": {"type": "string", "pattern": "^\\d{5}$"},
            "code": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3,}$"},
            "when": {"type": "string", "format": "date-time"},
            "day": {"type": "string", "format": "date"},
            "mail": {"type": "string", "format": "email"},
            "site": {"type": "string", "format": "uri"},
            "uid": {"type": "string", "format": "uuid"},
            "ip": {"type": "string", "format": "ipv4"},
            "ip6": {"type": "string", "format": "ipv6"},
        },
        "required": ["short", "long", "zip", "code", "when", "day", "mail", "site", "uid", "ip", "ip6"],
    },
    "numbers": {
        "type": "object",
        "properties": {
            "pos": {"type": "integer", "exclusiveMinimum": 0},
            "neg": {"type": "integer", "maximum": -3},
            "unit": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "range": {"type": "number", "minimum": 10.5, "maximum": 11},
            "step": {"type": "integer", "minimum": 7, "multipleOf": 5},
            "half": {"type": "number", "minimum": 0.2, "multipleOf": 0.5},
        },
        "required": ["pos", "neg", "unit", "range", "step", "half"],
    },
    "draft4_exclusive_flags": {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "properties": {
            "above": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
            "below": {"type": "integer", "maximum": 0, "exclusiveMaximum": True},
        },
        "required": ["above", "below"],
    },
    "arrays": {
        "type": "object",
        "properties": {
            "unique": {"type": "array", "items": {"type": "string"}, "minItems": 3, "uniqueItems": True},
            "unique_ints": {"type": "array", "items": {"type": "integer"}, "minItems": 3, "uniqueItems": True},
            "tuple": {
                "type": "array",
                "prefixItems": [{"type": "string"}, {"type": "integer"}],
                "items": False,
                "minItems": 2,
            },
            "contains": {"type": "array", "contains": {"const": 7}, "items": {"type": "integer"}},
            "capped": {"type": "array", "minItems": 0, "maxItems": 0},
        },
        "required": ["unique", "unique_ints", "tuple", "contains", "capped"],
    },
    "no_required_list_fills_every_property": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    },
    "untyped": {"properties": {"x": {}}, "required": ["x"]},
}


@pytest.mark.parametrize("name", list(HAND_WRITTEN))
def test_hand_written_schemas(name: str) -> None:
    assert_instance_valid(HAND_WRITTEN[name])


def test_strings_get_the_text_and_values_are_the_simplest_allowed() -> None:
    value = assert_instance_valid(HAND_WRITTEN["scalars"])
    assert value == {"s": TEXT, "i": 0, "n": 0, "b": False, "z": None}
    assert assert_instance_valid(HAND_WRITTEN["enum_and_const"]) == {
        "colour": "red",
        "level": 3,
        "kind": "fixed",
        "maybe": None,
    }
    assert assert_instance_valid(HAND_WRITTEN["no_required_list_fills_every_property"]) == {"city": TEXT, "days": 0}


def test_recursion_ends_at_an_empty_array_or_null() -> None:
    assert assert_instance_valid(HAND_WRITTEN["recursive_tree"]) == {"name": TEXT, "children": []}
    assert assert_instance_valid(HAND_WRITTEN["recursive_list_through_nullable_ref"]) == {"value": 0, "next": None}


def test_nullable_unions_take_the_value_branch() -> None:
    value = assert_instance_valid(HAND_WRITTEN["nullable_unions"])
    assert value == {"a": TEXT, "b": 0, "c": {"x": TEXT}, "d": False}


def test_only_required_properties_when_some_are_required() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "required": ["b"]}
    assert assert_instance_valid(schema) == {"b": TEXT}


def test_a_refusing_schema_and_edge_values() -> None:
    assert instance(True, TEXT) == TEXT
    assert instance(False, TEXT) is None
    assert instance({}, "") == ""
    assert instance({"$ref": "https://example.com/remote.json"}) is None  # not local: nothing to build from
    assert resolve("#/$defs/a~1b", {"$defs": {"a/b": {"type": "integer"}}}) == {"type": "integer"}


@pytest.mark.parametrize(
    ("pattern", "example"),
    [
        ("^\\d{5}$", "00000"),
        ("^[A-Z]{2}-\\d+$", "AA-0"),
        ("(foo|bar)baz", "foobaz"),
        ("^[^a-z]+$", "A"),
        ("^\\w+\\s\\S$", "a a"),
        ("^(a)\\1$", None),  # a back-reference: not spelt
    ],
)
def test_regex_examples(pattern: str, example: str | None) -> None:
    assert regex_example(pattern) == example


# ---- the shapes client libraries send ---------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    street: str
    zip_code: Annotated[str, Field(pattern=r"^\d{5}$")]


class Pet(BaseModel):
    kind: Literal["cat"] = "cat"
    lives: int = 9


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Person(BaseModel):
    """A person, as instructor and LangChain users write them (docstrings become descriptions)."""

    name: Annotated[str, Field(description="full name", min_length=2)]
    age: Annotated[int, Field(ge=0, le=150)]
    height: Annotated[float, Field(gt=0)]
    favourite: Colour
    addresses: list[Address]
    home: Address | None
    pet: Annotated[Pet | Dog, Field(discriminator="kind")]
    tags: set[str] = set()
    born: dt.date
    seen: dt.datetime
    scores: dict[str, float]
    pair: tuple[str, int]


class Node(BaseModel):
    name: str
    children: list[Node]
    parent: Node | None = None


PYDANTIC_MODELS = [Person, Address, Pet, Node]


@pytest.mark.parametrize("model", PYDANTIC_MODELS, ids=[m.__name__ for m in PYDANTIC_MODELS])
def test_pydantic_schemas_as_instructor_and_langchain_send_them(model: type[BaseModel]) -> None:
    """instructor (JSON_SCHEMA mode) and LangChain send `model_json_schema()`; the value parses back."""
    value = assert_instance_valid(model.model_json_schema())
    model.model_validate(value)


@pytest.mark.parametrize("model", PYDANTIC_MODELS, ids=[m.__name__ for m in PYDANTIC_MODELS])
def test_strict_schemas_as_the_openai_sdk_sends_them(model: type[BaseModel]) -> None:
    """`client.chat.completions.parse` and openai-agents send openai's strict transform (every
    property required, nullable as anyOf null, additionalProperties false)."""
    value = assert_instance_valid(to_strict_json_schema(model))
    model.model_validate(value)


def zod_fixtures() -> dict[str, Any]:
    return json.loads((FIXTURES / "zod_schemas.json").read_text())


@pytest.mark.parametrize("name", list(zod_fixtures()))
def test_zod_schemas_as_the_ai_sdk_and_the_openai_helper_send_them(name: str) -> None:
    """What zod 4's toJSONSchema, the AI SDK's zodSchema and openai's zodResponseFormat produce
    (written by tests/clients/node/dump-schemas.mjs)."""
    assert_instance_valid(zod_fixtures()[name])
