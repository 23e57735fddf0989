"""A deterministic JSON value that validates against a JSON schema, built from the schema alone.

The mock model answers `response_format: json_schema` with `instance(schema, text)` and fills a
tool call's arguments the same way, so structured output works offline. Strings get `text` (the
user's words, as the mock echoes them); everything else gets the simplest value the schema allows:

- `type` (one or a list: the first that is not null), `enum` (the first value), `const`;
- objects: the `required` properties (every listed property when the schema names none as
  required), further ones up to `minProperties`, required names missing from `properties` from
  `additionalProperties`;
- arrays: `minItems` items (`prefixItems` first, then `items`), `contains`/`minContains`, distinct
  values under `uniqueItems`, never more than `maxItems`;
- `anyOf`/`oneOf`: the first branch that is not null, and null (or the first branch that does not
  recurse) where taking a branch would re-enter a `$ref` being built, so recursive schemas end;
- `allOf`: the branches merged (properties, required names, the tightest bounds);
- `$ref` to `#` and JSON pointers into the schema (`#/$defs/…`, `#/definitions/…`);
- strings: `minLength`/`maxLength`, `format` (date-time, date, time, email, uri, uuid, ipv4, ipv6,
  hostname, duration, …), `pattern` when the text or one of a few stock strings matches it;
- numbers: `minimum`, `maximum`, their exclusive forms (number or draft-4 boolean), `multipleOf`.

Not supported (the value may then not validate): `not`, `if`/`then`/`else`, `dependentSchemas`,
`patternProperties`, remote `$ref`s, and patterns none of the stock strings match.
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass, field
from typing import Any, TypeGuard
from urllib.parse import unquote

Schema = dict[str, Any] | bool

MAX_DEPTH = 32  # past this, a schema that can only recurse gets an empty value
FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00Z",
    "duration": "P1D",
    "email": "user@example.com",
    "idn-email": "user@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uri": "https://example.com/",
    "uri-reference": "https://example.com/",
    "iri": "https://example.com/",
    "iri-reference": "https://example.com/",
    "url": "https://example.com/",
    "uri-template": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "json-pointer": "",
    "relative-json-pointer": "0",
    "regex": ".*",
}
# Tried in order against a `pattern` the text does not match.
PATTERN_CANDIDATES = ("", "a", "A", "0", "1", "abc", "ABC", "a1", "x", "user@example.com", "2025-01-01", "00:00")
TYPE_HINTS = (
    ("object", ("properties", "required", "additionalProperties", "minProperties", "maxProperties")),
    ("array", ("items", "prefixItems", "minItems", "maxItems", "contains", "uniqueItems")),
    ("string", ("minLength", "maxLength", "pattern", "format")),
    ("number", ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")),
)
SCALAR_BOUNDS = {"minimum": max, "exclusiveMinimum": max, "minLength": max, "minItems": max, "minProperties": max}
UPPER_BOUNDS = {"maximum": min, "exclusiveMaximum": min, "maxLength": min, "maxItems": min, "maxProperties": min}


@dataclass
class Context:
    """What one generation shares: the root (for `$ref`s), the text for strings, the refs being built."""

    root: Schema
    text: str
    active: list[str] = field(default_factory=list)


def instance(schema: Schema, text: str = "") -> Any:
    """A value valid against `schema`, the same every time for the same schema and text."""
    ctx = Context(root=schema, text=text, active=["#"])
    return _value(schema, ctx, 0, 0)


# ---- dispatch ---------------------------------------------------------------------------------


def _value(schema: Schema, ctx: Context, depth: int, variant: int) -> Any:
    if schema is True or schema is False or not isinstance(schema, dict):
        return _string({}, ctx, variant) if schema is not False else None
    if depth > MAX_DEPTH:
        return None
    if "$ref" in schema:
        return _ref(schema, ctx, depth, variant)
    if "allOf" in schema:
        return _value(merge_all_of(schema, ctx), ctx, depth + 1, variant)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][variant % len(schema["enum"])]
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            siblings = {k: v for k, v in schema.items() if k != key}
            branch = choose_branch(branches, ctx, depth)
            return _value(_merge(siblings, branch, ctx) if siblings else branch, ctx, depth + 1, variant)
    kind = value_type(schema)
    if kind == "object":
        return _object(schema, ctx, depth, variant)
    if kind == "array":
        return _array(schema, ctx, depth, variant)
    if kind == "integer":
        return _number(schema, variant, integer=True)
    if kind == "number":
        return _number(schema, variant, integer=False)
    if kind == "boolean":
        return variant % 2 == 1
    if kind == "null":
        return None
    return _string(schema, ctx, variant)


def value_type(schema: dict[str, Any]) -> str:
    """The type to build: the first non-null one named, else the one its keywords imply (else string)."""
    kind = schema.get("type")
    if isinstance(kind, list):
        named = [k for k in kind if k != "null"]
        return named[0] if named else "null"
    if isinstance(kind, str):
        return kind
    for implied, keywords in TYPE_HINTS:
        if any(k in schema for k in keywords):
            return implied
    return "string"


# ---- references and combinations ---------------------------------------------------------------


def resolve(ref: str, root: Schema) -> Schema | None:
    """The schema a local `$ref` points at (`#`, `#/$defs/Name`, any JSON pointer); None if not local."""
    if not ref.startswith("#"):
        return None
    node: Any = root
    pointer = unquote(ref[1:])
    if not pointer:
        return root
    if not pointer.startswith("/"):
        return None  # an anchor name: not supported
    for token in pointer[1:].split("/"):
        key = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return None
    return node if isinstance(node, (dict, bool)) else None


def _ref(schema: dict[str, Any], ctx: Context, depth: int, variant: int) -> Any:
    ref = str(schema["$ref"])
    target = resolve(ref, ctx.root)
    if target is None:
        return None
    siblings = {k: v for k, v in schema.items() if k != "$ref"}
    merged = _merge(siblings, target, ctx) if siblings and isinstance(target, dict) else target
    ctx.active.append(ref)
    try:
        return _value(merged, ctx, depth + 1, variant)
    finally:
        ctx.active.pop()


def recurses(schema: Schema, ctx: Context) -> bool:
    """Whether taking `schema` re-enters a `$ref` already being built (directly, or as its only item)."""
    if not isinstance(schema, dict):
        return False
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return ref in ctx.active or (ref == "#" and "#" in ctx.active)
    branches = schema.get("allOf")
    return isinstance(branches, list) and any(recurses(b, ctx) for b in branches)


def is_null(schema: Schema) -> bool:
    return isinstance(schema, dict) and (schema.get("type") == "null" or schema.get("const", 0) is None)


def choose_branch(branches: list[Schema], ctx: Context, depth: int) -> Schema:
    """The first branch that is neither null nor recursive; else null; else the first that doesn't recurse."""
    settled = depth > MAX_DEPTH // 2
    for branch in branches:
        if not is_null(branch) and not recurses(branch, ctx) and not (settled and _has_ref(branch)):
            return branch
    for branch in branches:
        if is_null(branch):
            return branch
    return next((b for b in branches if not recurses(b, ctx)), branches[0])


def _has_ref(schema: Schema) -> bool:
    return isinstance(schema, dict) and "$ref" in schema


def merge_all_of(schema: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """An `allOf` schema as one schema: its siblings and every branch merged."""
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for branch in schema["allOf"]:
        merged = _merge(merged, branch, ctx)
    return merged


def _merge(base: dict[str, Any], other: Schema, ctx: Context) -> dict[str, Any]:
    """Two schemas that must both hold, as one (refs resolved, properties and bounds combined)."""
    if not isinstance(other, dict):
        return base
    seen: set[str] = set()
    while "$ref" in other and isinstance(other["$ref"], str) and other["$ref"] not in seen:
        seen.add(other["$ref"])
        target = resolve(other["$ref"], ctx.root)
        if not isinstance(target, dict):
            break
        other = {**target, **{k: v for k, v in other.items() if k != "$ref"}}
    if "allOf" in other:
        other = merge_all_of(other, ctx)
    out = dict(base)
    for key, value in other.items():
        if key not in out:
            out[key] = value
        elif key == "properties" and isinstance(value, dict):
            props = dict(out[key])
            for name, sub in value.items():
                props[name] = {"allOf": [props[name], sub]} if name in props else sub
            out[key] = props
        elif key == "required" and isinstance(value, list):
            out[key] = list(dict.fromkeys([*out[key], *value]))
        elif key in SCALAR_BOUNDS and _numeric(value) and _numeric(out[key]):
            out[key] = SCALAR_BOUNDS[key](out[key], value)
        elif key in UPPER_BOUNDS and _numeric(value) and _numeric(out[key]):
            out[key] = UPPER_BOUNDS[key](out[key], value)
        elif key == "type" and value != out[key]:
            out[key] = _common_type(out[key], value)
    return out


def _numeric(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _common_type(a: Any, b: Any) -> Any:
    """The types both allow (integer is a number); the first of `a` when they share none."""
    left = a if isinstance(a, list) else [a]
    right = b if isinstance(b, list) else [b]
    common = [t for t in left if t in right or (t == "integer" and "number" in right)]
    common += [t for t in right if t == "integer" and "number" in left and t not in common]
    return (common if len(common) > 1 else common[0]) if common else a


# ---- objects and arrays -------------------------------------------------------------------------


def _object(schema: dict[str, Any], ctx: Context, depth: int, variant: int) -> dict[str, Any]:
    props: dict[str, Any] = schema.get("properties") or {}
    required = schema.get("required")
    names = list(required) if isinstance(required, list) else list(props)
    for name in props:
        if len(names) >= int(schema.get("minProperties", 0)):
            break
        if name not in names:
            names.append(name)
    extra = schema.get("additionalProperties", True)
    out: dict[str, Any] = {}
    for name in names:
        sub = props.get(name, extra)
        out[name] = _value(sub, ctx, depth + 1, variant)
    filler = 1
    while len(out) < int(schema.get("minProperties", 0)) and extra is not False:
        name = f"key{filler}"
        filler += 1
        if name not in out:
            out[name] = _value(extra, ctx, depth + 1, variant)
    return out


def _array(schema: dict[str, Any], ctx: Context, depth: int, variant: int) -> list[Any]:
    prefix: list[Any] = schema.get("prefixItems") or []
    items = schema.get("items", True)
    if isinstance(items, list):  # draft-4..2019 tuple form
        prefix, items = items, schema.get("additionalItems", True)
    count = int(schema.get("minItems", 0))
    contains: Any = schema.get("contains")
    wanted = int(schema.get("minContains", 1)) if contains is not None else 0
    count = max(count, wanted)
    if "maxItems" in schema:
        count = min(count, int(schema["maxItems"]))
    unique = bool(schema.get("uniqueItems"))
    out: list[Any] = []
    for i in range(count):
        sub = contains if i < wanted else (prefix[i] if i < len(prefix) else items)
        out.append(_value(sub, ctx, depth + 1, variant + i if unique else variant))
    return out


# ---- scalars ------------------------------------------------------------------------------------


def _string(schema: dict[str, Any], ctx: Context, variant: int) -> str:
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in FORMATS:
        text = _formatted(fmt, variant)
    else:
        text = ctx.text if variant == 0 else f"{ctx.text} {variant + 1}"
    pattern = schema.get("pattern")
    compiled = _compiled(pattern) if isinstance(pattern, str) else None
    if compiled is not None and not compiled.search(text):
        text = _matching(compiled, variant) or text
    low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
    sized = text
    if high is not None and len(sized) > int(high):
        sized = sized[: int(high)]
    if len(sized) < low:
        sized += "x" * (low - len(sized))
    return sized if compiled is None or compiled.search(sized) else text


def _formatted(fmt: str, variant: int) -> str:
    value = FORMATS[fmt]
    if not variant:
        return value
    if fmt == "uuid":
        return f"00000000-0000-4000-8000-{variant:012d}"
    if fmt in ("email", "idn-email"):
        return f"user{variant}@example.com"
    if fmt in ("date", "date-time"):
        return value.replace("01-01", f"01-{min(28, variant + 1):02d}", 1)
    return value


def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _matching(compiled: re.Pattern[str], variant: int) -> str | None:
    """A string `compiled` matches (anywhere, as JSON schema's patterns do): one built from the
    pattern itself, else a stock string; None when neither matches."""
    built = regex_example(compiled.pattern)
    candidates = [built] if built is not None else []
    candidates += [f"{c}{variant}" if variant else c for c in PATTERN_CANDIDATES]
    return next((c for c in candidates if compiled.search(c)), None)


# ---- strings from regular expressions ---------------------------------------------------------------

# Python's own regex parser (stable since 3.11 as `re._parser`), loaded by name: it has no public API.
_SRE: Any = importlib.import_module("re._parser")
CATEGORY_CHARS = {
    "CATEGORY_DIGIT": "0",
    "CATEGORY_NOT_DIGIT": "a",
    "CATEGORY_WORD": "a",
    "CATEGORY_NOT_WORD": "-",
    "CATEGORY_SPACE": " ",
    "CATEGORY_NOT_SPACE": "a",
}
CLASS_CANDIDATES = "aA0_- x.@"


def regex_example(pattern: str) -> str | None:
    """The shortest string the pattern's first alternatives spell (None for constructs not covered:
    back-references, lookarounds, conditionals)."""
    try:
        parsed = _SRE.parse(pattern)
    except Exception:
        return None
    out: list[str] = []
    return "".join(out) if _spell(list(parsed), out) else None


def _spell(items: list[Any], out: list[str]) -> bool:
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(arg))
        elif name == "NOT_LITERAL":
            out.append("a" if arg != ord("a") else "b")
        elif name == "ANY":
            out.append("a")
        elif name == "IN":
            char = _class_char(list(arg))
            if char is None:
                return False
            out.append(char)
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, _, sub = arg
            for _ in range(low):
                if not _spell(list(sub), out):
                    return False
        elif name == "SUBPATTERN":
            if not _spell(list(arg[-1]), out):
                return False
        elif name == "ATOMIC_GROUP":
            if not _spell(list(arg), out):
                return False
        elif name == "BRANCH":
            if not _spell(list(arg[1][0]), out):
                return False
        elif name == "CATEGORY":
            out.append(CATEGORY_CHARS.get(str(arg), "a"))
        elif name != "AT":  # anchors spell nothing
            return False
    return True


def _class_char(items: list[Any]) -> str | None:
    """A character of a `[...]` class: its first member, or for `[^...]` a common one it leaves out."""
    if items and str(items[0][0]) == "NEGATE":
        return next((c for c in CLASS_CANDIDATES if not any(_member(c, op, arg) for op, arg in items[1:])), None)
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            return chr(arg)
        if name == "RANGE":
            return chr(arg[0])
        if name == "CATEGORY":
            return CATEGORY_CHARS.get(str(arg), "a")
    return None


def _number(schema: dict[str, Any], variant: int, *, integer: bool) -> int | float:
    """The smallest value from `variant` up that fits the bounds and `multipleOf` (the bounds' middle
    for a number whose open interval holds no whole step)."""
    low, low_open = _bound(schema, "minimum", "exclusiveMinimum")
    high, high_open = _bound(schema, "maximum", "exclusiveMaximum")

    def fits(value: float) -> bool:
        above = low is None or (value > low if low_open else value >= low)
        below = high is None or (value < high if high_open else value <= high)
        return above and below

    multiple = schema.get("multipleOf")
    step = float(multiple) if _numeric(multiple) and multiple > 0 else None
    if integer and (step is None or not step.is_integer()):
        step = 1.0 if step is None else _integer_step(step)
    start = float(variant)
    if low is not None and start < low:
        start = low
    if high is not None and start > high:
        start = high if low is None else max(low, high - (step or 1))
    if step is not None:
        value = math.ceil(start / step - 1e-9) * step
        for candidate in (value, value + step, value - step):
            if fits(candidate):
                return _plain(round(candidate, 12), integer)
        return _plain(value, integer)
    if fits(start):
        return _plain(start, integer)
    if low is not None and high is not None:
        return _plain((low + high) / 2, integer)
    return _plain(start + 1 if low is not None else start - 1, integer)


def _integer_step(step: float) -> float:
    """The smallest whole multiple of a fractional `multipleOf` (0.5 -> 1, 0.25 -> 1, 1.5 -> 3)."""
    for k in range(1, 1001):
        if (step * k).is_integer():
            return step * k
    return 1.0


def _plain(value: float, integer: bool) -> int | float:
    """Whole values as JSON integers; others as floats."""
    return round(value) if integer or float(value).is_integer() else value


def _bound(schema: dict[str, Any], inclusive: str, exclusive: str) -> tuple[float | None, bool]:
    """A bound and whether it is open; `exclusiveMinimum` may be a number (draft 6+) or a flag (draft 4)."""
    open_bound = schema.get(exclusive)
    if _numeric(open_bound):
        closed = schema.get(inclusive)
        if _numeric(closed) and (closed > open_bound if inclusive == "minimum" else closed < open_bound):
            return float(closed), False
        return float(open_bound), True
    closed = schema.get(inclusive)
    if _numeric(closed):
        return float(closed), open_bound is True
    return None, False


CATEGORY_TESTS = {
    "CATEGORY_DIGIT": str.isdigit,
    "CATEGORY_NOT_DIGIT": lambda c: not c.isdigit(),
    "CATEGORY_WORD": lambda c: c.isalnum() or c == "_",
    "CATEGORY_NOT_WORD": lambda c: not (c.isalnum() or c == "_"),
    "CATEGORY_SPACE": str.isspace,
    "CATEGORY_NOT_SPACE": lambda c: not c.isspace(),
}


def _member(char: str, op: Any, arg: Any) -> bool:
    """Whether one member of a parsed `[...]` class admits `char` (unknown members admit everything)."""
    name = str(op)
    if name == "LITERAL":
        return ord(char) == arg
    if name == "RANGE":
        return bool(arg[0] <= ord(char) <= arg[1])
    if name == "CATEGORY":
        test = CATEGORY_TESTS.get(str(arg))
        return test(char) if test is not None else True
    return True
