"""Routing: the table (built-ins, database, aliases), weights, the routing file, breakers and backoff."""

from __future__ import annotations

import random
import re
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from completions import route_config
from completions.failover import CircuitBreakers, backoff_delay
from completions.models import ModelRoute
from completions.providers import Route
from completions.routing import RouteTable, builtin_routes, weighted_order

ROOT = Path(__file__).resolve().parents[1]


def test_builtins_follow_the_environment() -> None:
    assert [r.model_name for r in builtin_routes({})] == ["mock-gpt-model"]
    with_gemini = builtin_routes({"GEMINI_API_KEY": "x"})
    gemini = {r.model_name: r for r in with_gemini if r.provider == "gemini"}
    assert "gemini-2.5-flash" in gemini and gemini["gemini-2.5-flash"].api_key_env == "GEMINI_API_KEY"
    assert gemini["gemini-2.5-flash"].input_price == Decimal("0.30")
    assert all(r.provider != "anthropic" for r in with_gemini)
    assert {r.provider for r in builtin_routes({"ANTHROPIC_API_KEY": "x", "OPENAI_API_KEY": "y"})} == {
        "mock",
        "anthropic",
        "openai",
    }
    assert [r.model_name for r in builtin_routes({"GEMINI_API_KEY": "x", "GATEWAY_BUILTIN_ROUTES": "false"})] == [
        "mock-gpt-model"
    ]


def test_table_database_routes_replace_builtins_and_aliases_point_at_them() -> None:
    builtin = [
        Route("mock-gpt-model", "mock", "mock-gpt-model"),
        Route("gemini-2.5-flash", "gemini", "gemini-2.5-flash"),
    ]
    configured = [
        Route("gemini-2.5-flash", "openai", "proxy-flash", id=1),
        Route("fast", "mock", "m", id=2, aliases=("gpt-4o",)),
        Route("fast", "mock", "m2", id=3),
    ]
    table = RouteTable.build(builtin, configured)
    assert [r.id for r in table.routes_for("gemini-2.5-flash")] == [1]
    assert [r.id for r in table.routes_for("gpt-4o")] == [2]
    assert [r.id for r in table.routes_for("fast")] == [2, 3]
    assert table.model_ids() == ["fast", "gemini-2.5-flash", "gpt-4o", "mock-gpt-model"]


def test_weighted_order_spreads_by_weight() -> None:
    heavy, light = Route("m", "mock", "a", weight=3), Route("m", "mock", "b", weight=1)
    rng = random.Random(7)
    firsts = Counter(weighted_order([heavy, light], rng)[0].upstream_model for _ in range(4000))
    assert 0.70 < firsts["a"] / 4000 < 0.80  # 3:1
    assert weighted_order([Route("m", "mock", "z", weight=0), heavy], rng)[0] is heavy


def test_backoff_grows_exponentially_with_full_jitter() -> None:
    rng = random.Random(1)
    for retry, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (6, 8.0)):
        samples = [backoff_delay(retry, 0.5, cap=8.0, rng=rng) for _ in range(500)]
        assert max(samples) <= ceiling and max(samples) > ceiling * 0.9 and min(samples) < ceiling * 0.1


def test_circuit_breaker_opens_cools_down_and_probes(settings: Any) -> None:
    import time

    route = Route("m", "mock", "m", options={"breaker_failures": 2, "breaker_cooldown": 0.2})
    breakers = CircuitBreakers()
    breakers.failure(route)
    assert breakers.state(route) == "closed" and breakers.allow(route)
    breakers.failure(route)
    assert breakers.state(route) == "open" and not breakers.allow(route)
    time.sleep(0.25)
    assert breakers.state(route) == "half-open"
    assert breakers.allow(route) and not breakers.allow(route)  # one probe at a time
    breakers.failure(route)  # the probe failed: open again
    assert breakers.state(route) == "open"
    time.sleep(0.25)
    assert breakers.allow(route)
    breakers.success(route)
    assert breakers.state(route) == "closed" and breakers.allow(route) and breakers.allow(route)


@pytest.mark.django_db
def test_example_routing_file_loads_idempotently_and_replaces() -> None:
    data = route_config.read_file(ROOT / "routes.example.yaml")
    first = route_config.apply(data)
    assert len(first.created) == 5 and not first.updated
    assert route_config.apply(data).unchanged == first.created
    gemini = ModelRoute.objects.get(model_name="gemini-flash")
    assert (gemini.upstream_model, gemini.api_key_env, gemini.aliases, gemini.fallbacks) == (
        "gemini-2.5-flash",
        "GEMINI_API_KEY",
        ["gpt-4o-mini"],
        ["claude-sonnet"],
    )
    assert gemini.output_price_per_million == Decimal("2.5") and gemini.first_byte_timeout == 60
    assert sorted(ModelRoute.objects.filter(model_name="llama-local").values_list("weight", flat=True)) == [1, 3]
    data["routes"][1]["weight"] = 5
    data["routes"] = data["routes"][:2]
    result = route_config.apply(data, replace=True)
    assert len(result.updated) == 1 and len(result.deleted) == 3
    assert ModelRoute.objects.get(model_name="gemini-flash").weight == 5


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"routes": [{"model": "x"}]}, "routes[0]: `provider` is required"),
        ({"routes": [{"model": "x", "provider": "nope"}]}, "unknown provider"),
        ({"routes": [{"model": "x", "provider": "mock", "wieght": 2}]}, "unknown keys ['wieght']"),
        ({"routes": [{"model": "x", "provider": "mock", "price": {"input": "abc"}}]}, "routes[0].price.input"),
        (
            {"routes": [{"model": "x", "provider": "mock", "timeouts": {"first_byte": -1}}]},
            "routes[0].timeouts.first_byte",
        ),
        ({"routes": [{"model": "x", "provider": "mock", "aliases": "gpt-4o"}]}, "routes[0].aliases"),
        ({"route": []}, "file"),
    ],
)
def test_routing_file_errors_say_where(data: Any, where: str) -> None:
    with pytest.raises(route_config.RouteFileError, match=re.escape(where)):
        route_config.parse(data)


def test_unknown_model_and_route_changes_reach_the_router(gateway: Any, client: Any) -> None:
    import openai

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="later", messages=[{"role": "user", "content": "hi"}])
    ModelRoute.objects.create(model_name="later", provider="mock", upstream_model="later-upstream", aliases=["gpt-4o"])
    r = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert r.model == "later-upstream"
    ids = {m.id: m.owned_by for m in client.models.list().data}
    assert ids["later"] == "mock" and ids["gpt-4o"] == "mock"
    ModelRoute.objects.filter(model_name="later").update(enabled=False)  # no signal: another worker's edit
    from completions.app import routes_changed

    routes_changed()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="later", messages=[{"role": "user", "content": "hi"}])
