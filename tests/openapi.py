"""Validate payloads against the schemas of OpenAI's published OpenAPI spec (the contract).

The spec mixes OpenAPI 3.0's `nullable: true` into 3.1 schemas; it is rewritten
to JSON Schema's `null` type once at load. Response schemas are made strict:
an object may carry only the properties the spec documents.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "openai-openapi.yaml"
_VENDORED = Path(__file__).resolve().parent / "spec" / "openai-openapi.yaml"
SPEC_PATH = Path(os.environ.get("OPENAI_SPEC") or (_SHARED if _SHARED.exists() else _VENDORED))
SPEC_URI = "urn:openai-openapi"


def _rewrite_nullable(node: Any) -> Any:
    if isinstance(node, list):
        return [_rewrite_nullable(x) for x in node]
    if not isinstance(node, dict):
        return node
    node = {k: _rewrite_nullable(v) for k, v in node.items()}
    if node.pop("nullable", False):
        kind = node.get("type")
        if isinstance(kind, str):
            node["type"] = [kind, "null"]
            if "enum" in node and None not in node["enum"]:
                node["enum"] = [*node["enum"], None]
        else:
            node = {"anyOf": [node, {"type": "null"}]}
    return node


def _strict(node: Any, inside_all_of: bool = False) -> Any:
    """Forbid undocumented properties on objects (not inside allOf, where that would misfire)."""
    if isinstance(node, list):
        return [_strict(x, inside_all_of) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        out[key] = _strict(value, inside_all_of or key == "allOf")
    if "properties" in out and "additionalProperties" not in out and not inside_all_of:
        out["additionalProperties"] = False
    return out


@functools.cache
def spec() -> dict[str, Any]:
    with SPEC_PATH.open() as fh:
        raw = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return _rewrite_nullable(raw)


@functools.cache
def _registry(strict: bool) -> Registry:
    document = copy.deepcopy(spec())
    if strict:
        document["components"]["schemas"] = _strict(document["components"]["schemas"])
    return Registry().with_resource(SPEC_URI, Resource(contents=document, specification=DRAFT202012))


@functools.cache
def validator(schema_name: str, strict: bool = True) -> Draft202012Validator:
    """A validator for `#/components/schemas/<schema_name>`."""
    ref = {"$ref": f"{SPEC_URI}#/components/schemas/{schema_name}"}
    return Draft202012Validator(ref, registry=_registry(strict))


def assert_valid(instance: Any, schema_name: str, strict: bool = True) -> None:
    """Fail with every violation listed when `instance` does not match the spec's schema."""
    errors = sorted(validator(schema_name, strict).iter_errors(instance), key=lambda e: list(e.path))
    if errors:
        lines = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors[:10]]
        raise AssertionError(f"payload does not match {schema_name}:\n" + "\n".join(lines))


def resolved_properties(schema_name: str) -> dict[str, Any]:
    """The properties of a schema, with allOf branches merged (for parity checks)."""
    schemas = spec()["components"]["schemas"]

    def props(node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            return props(schemas[node["$ref"].rsplit("/", 1)[-1]])
        out: dict[str, Any] = {}
        for branch in node.get("allOf", []) + node.get("anyOf", []):
            out.update(props(branch))
        out.update(node.get("properties", {}))
        return out

    return props(schemas[schema_name])


def without_extensions(payload: Any) -> Any:
    """A copy without the one documented extension we send: `extra_content` on tool calls
    (Google's place for Gemini thought signatures), so the rest is checked strictly."""
    if isinstance(payload, list):
        return [without_extensions(x) for x in payload]
    if isinstance(payload, dict):
        return {k: without_extensions(v) for k, v in payload.items() if k != "extra_content"}
    return payload
