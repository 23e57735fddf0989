"""The routing file (YAML or JSON) that `manage.py load_routes` applies to the ModelRoute table.

    routes:
      - model: gemini-flash            # public id clients send (required)
        provider: gemini               # mock | gemini | anthropic | openai (required)
        upstream_model: gemini-2.5-flash
        api_key_env: GEMINI_API_KEY    # the variable's NAME; the secret stays in the environment
        base_url: ""                   # optional
        aliases: [gpt-4o-mini]
        weight: 1
        fallbacks: [claude]
        max_retries: 1
        timeouts: {connect: 5, first_byte: 60, idle: 30}
        price: {input: 0.30, output: 2.50}   # USD per million tokens
        options: {}                    # provider-specific
        enabled: true

A route is identified by (model, provider, upstream_model, base_url): loading
the same file twice changes nothing. With `replace`, routes not in the file
are deleted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson
import yaml
from django.db import transaction

from .models import ModelRoute
from .providers import known

ROUTE_KEYS = {
    "model",
    "provider",
    "upstream_model",
    "api_key_env",
    "base_url",
    "aliases",
    "weight",
    "fallbacks",
    "max_retries",
    "timeouts",
    "price",
    "options",
    "enabled",
}
TIMEOUT_KEYS = {"connect": "connect_timeout", "first_byte": "first_byte_timeout", "idle": "idle_timeout"}


class RouteFileError(ValueError):
    """The routing file is malformed; the message says where."""


@dataclass
class LoadResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def read_file(path: str | Path) -> Any:
    """Parse a routing file: JSON if it ends in .json, else YAML (a superset of JSON)."""
    text = Path(path).read_text()
    try:
        return orjson.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise RouteFileError(f"{path}: not valid YAML/JSON: {exc}") from None


def _expect(cond: bool, where: str, message: str) -> None:
    if not cond:
        raise RouteFileError(f"{where}: {message}")


def _number(value: Any, where: str, *, integer: bool = False) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    _expect(
        ok and not isinstance(value, bool) and value >= 0,
        where,
        f"must be a non-negative {'integer' if integer else 'number'}",
    )
    return value


def _price(value: Any, where: str) -> Decimal:
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        raise RouteFileError(f"{where}: must be a number") from None
    _expect(price >= 0, where, "must not be negative")
    return price


def parse_route(entry: Any, where: str) -> dict[str, Any]:
    """ModelRoute field values for one entry of the file."""
    _expect(isinstance(entry, dict), where, "each route must be a mapping")
    unknown = set(entry) - ROUTE_KEYS
    _expect(not unknown, where, f"unknown keys {sorted(unknown)}; allowed: {sorted(ROUTE_KEYS)}")
    for key in ("model", "provider"):
        _expect(isinstance(entry.get(key), str) and entry[key], where, f"`{key}` is required")
    _expect(known(entry["provider"]), where, f"unknown provider {entry['provider']!r}")
    fields: dict[str, Any] = {
        "model_name": entry["model"],
        "provider": entry["provider"],
        "upstream_model": entry.get("upstream_model") or entry["model"],
        "api_key_env": entry.get("api_key_env", ""),
        "base_url": entry.get("base_url", ""),
        "enabled": bool(entry.get("enabled", True)),
    }
    for key in ("aliases", "fallbacks"):
        value = entry.get(key, [])
        _expect(
            isinstance(value, list) and all(isinstance(x, str) for x in value),
            f"{where}.{key}",
            "must be a list of model ids",
        )
        fields[key] = value
    if "weight" in entry:
        fields["weight"] = _number(entry["weight"], f"{where}.weight", integer=True)
    if "max_retries" in entry:
        fields["max_retries"] = _number(entry["max_retries"], f"{where}.max_retries", integer=True)
    timeouts = entry.get("timeouts", {})
    _expect(
        isinstance(timeouts, dict) and set(timeouts) <= set(TIMEOUT_KEYS),
        f"{where}.timeouts",
        f"keys must be among {sorted(TIMEOUT_KEYS)}",
    )
    for key, column in TIMEOUT_KEYS.items():
        if key in timeouts:
            fields[column] = float(_number(timeouts[key], f"{where}.timeouts.{key}"))
    price = entry.get("price", {})
    _expect(
        isinstance(price, dict) and set(price) <= {"input", "output"}, f"{where}.price", "keys must be input and output"
    )
    if "input" in price:
        fields["input_price_per_million"] = _price(price["input"], f"{where}.price.input")
    if "output" in price:
        fields["output_price_per_million"] = _price(price["output"], f"{where}.price.output")
    options = entry.get("options", {})
    _expect(isinstance(options, dict), f"{where}.options", "must be a mapping")
    fields["options"] = options
    return fields


def parse(data: Any) -> list[dict[str, Any]]:
    """Validate a whole routing document; every problem is reported with its location."""
    _expect(
        isinstance(data, dict) and isinstance(data.get("routes"), list),
        "file",
        "must be a mapping with a `routes` list",
    )
    extra = set(data) - {"routes"}
    _expect(not extra, "file", f"unknown top-level keys {sorted(extra)}")
    return [parse_route(entry, f"routes[{i}]") for i, entry in enumerate(data["routes"])]


def _identity(fields: dict[str, Any]) -> tuple[str, str, str, str]:
    return (fields["model_name"], fields["provider"], fields["upstream_model"], fields["base_url"])


@transaction.atomic
def apply(data: Any, *, replace: bool = False) -> LoadResult:
    """Create or update the routes of a parsed document (and, with `replace`, delete the others)."""
    wanted = parse(data)
    result = LoadResult()
    existing = {_identity(vars(r)): r for r in ModelRoute.objects.select_for_update()}
    seen: set[tuple[str, str, str, str]] = set()
    for fields in wanted:
        identity = _identity(fields)
        _expect(identity not in seen, fields["model_name"], "the same route appears twice")
        seen.add(identity)
        row = existing.get(identity)
        label = f"{fields['model_name']} -> {fields['provider']}:{fields['upstream_model']}"
        if row is None:
            ModelRoute.objects.create(**fields)
            result.created.append(label)
            continue
        changed = [name for name, value in fields.items() if getattr(row, name) != value]
        if changed:
            for name in changed:
                setattr(row, name, fields[name])
            row.save()
            result.updated.append(label)
        else:
            result.unchanged.append(label)
    if replace:
        for identity, row in existing.items():
            if identity not in seen:
                result.deleted.append(str(row))
                row.delete()
    return result
