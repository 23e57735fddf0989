"""The routing table: which routes serve a public model id, cached per process.

Routes come from the `ModelRoute` table plus built-in routes (the mock model
always; common Gemini, Anthropic and OpenAI models when their API key is in the
environment). A database route replaces a built-in one of the same public id.
The table is loaded once per process and reloaded when a route changes: at
once in the process that saved it, and within GATEWAY_ROUTE_CHECK_SECONDS in
every other worker (a version row in the database, polled in the background). No
request pays a database query for routing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings

from .circuit import DATABASE_ERRORS, Circuit
from .db import run_db
from .errors import ModelNotFound, ServiceUnavailable, dependency_unavailable
from .providers import Provider, Route, known, provider_class
from .shared import SharedCache

logger = logging.getLogger(__name__)

# The database's routes as last read (the route version and pickled `Route` objects), for a worker
# that starts while the database is down: change the key when Route changes shape.
SNAPSHOT_KEY = "routes:snapshot:v2"


def _price(value: str) -> Decimal:
    return Decimal(value)


# Built-in routes per provider, enabled by the presence of the provider's key in the
# environment: (public id, upstream model, USD per million input tokens, per million output).
BUILTIN_MODELS: dict[str, tuple[str, list[tuple[str, str, str, str]]]] = {
    "gemini": (
        "GEMINI_API_KEY",
        [
            ("gemini-2.5-flash", "gemini-2.5-flash", "0.30", "2.50"),
            ("gemini-2.5-pro", "gemini-2.5-pro", "1.25", "10.00"),
            ("gemini-2.5-flash-lite", "gemini-2.5-flash-lite", "0.10", "0.40"),
            ("gemini-2.0-flash", "gemini-2.0-flash", "0.10", "0.40"),
            ("gemini-3-pro-preview", "gemini-3-pro-preview", "2.00", "12.00"),
            ("gemini-embedding-001", "gemini-embedding-001", "0.15", "0"),
            ("text-embedding-004", "text-embedding-004", "0", "0"),
        ],
    ),
    "anthropic": (
        "ANTHROPIC_API_KEY",
        [
            ("claude-sonnet-4-6", "claude-sonnet-4-6", "3.00", "15.00"),
            ("claude-haiku-4-5", "claude-haiku-4-5", "1.00", "5.00"),
            ("claude-opus-4-6", "claude-opus-4-6", "5.00", "25.00"),
        ],
    ),
    "openai": (
        "OPENAI_API_KEY",
        [
            ("gpt-4o", "gpt-4o", "2.50", "10.00"),
            ("gpt-4o-mini", "gpt-4o-mini", "0.15", "0.60"),
            ("gpt-4.1", "gpt-4.1", "2.00", "8.00"),
            ("gpt-4.1-mini", "gpt-4.1-mini", "0.40", "1.60"),
            ("text-embedding-3-small", "text-embedding-3-small", "0.02", "0"),
        ],
    ),
}


def builtin_routes(environ: dict[str, str] | None = None) -> list[Route]:
    """The routes that exist without any configuration."""
    environ = dict(os.environ) if environ is None else environ
    routes = [
        Route(model_name=settings.GATEWAY_MOCK_MODEL, provider="mock", upstream_model=settings.GATEWAY_MOCK_MODEL)
    ]
    if environ.get("GATEWAY_BUILTIN_ROUTES", "true").lower() in ("0", "false", "no"):
        return routes
    for provider, (env_name, models) in BUILTIN_MODELS.items():
        if not environ.get(env_name):
            continue
        base_url = environ.get("OPENAI_BASE_URL", "") if provider == "openai" else ""
        for public, upstream, price_in, price_out in models:
            routes.append(
                Route(
                    model_name=public,
                    provider=provider,
                    upstream_model=upstream,
                    api_key_env=env_name,
                    base_url=base_url,
                    input_price=_price(price_in),
                    output_price=_price(price_out),
                )
            )
    return routes


def route_from_row(row: Any) -> Route:
    """A Route from a ModelRoute row."""
    return Route(
        id=row.id,
        model_name=row.model_name,
        provider=row.provider,
        upstream_model=row.upstream_model or row.model_name,
        base_url=row.base_url,
        api_key_env=row.api_key_env,
        weight=row.weight,
        connect_timeout=row.connect_timeout,
        first_byte_timeout=row.first_byte_timeout,
        idle_timeout=row.idle_timeout,
        max_retries=row.max_retries,
        fallbacks=tuple(row.fallbacks or ()),
        input_price=row.input_price_per_million,
        output_price=row.output_price_per_million,
        options=dict(row.options or {}),
        aliases=tuple(row.aliases or ()),
    )


def database_routes() -> list[Route]:
    """Enabled routes from the ModelRoute table (sync)."""
    from .models import ModelRoute

    routes = []
    for row in ModelRoute.objects.filter(enabled=True):
        if not known(row.provider):
            logger.warning("route %s names unknown provider %r; skipped", row.id, row.provider)
            continue
        routes.append(route_from_row(row))
    return routes


@dataclass
class RouteTable:
    """Public model id -> routes serving it."""

    by_model: dict[str, list[Route]] = field(default_factory=dict)

    @classmethod
    def build(cls, builtin: Iterable[Route], configured: Iterable[Route]) -> RouteTable:
        table = cls()
        configured = list(configured)
        configured_names = {name for r in configured for name in (r.model_name, *r.aliases)}
        for route in builtin:
            if route.model_name not in configured_names:
                table.by_model.setdefault(route.model_name, []).append(route)
        for route in configured:
            for name in (route.model_name, *route.aliases):
                table.by_model.setdefault(name, []).append(route)
        return table

    def routes_for(self, model: str) -> list[Route]:
        return self.by_model.get(model, [])

    def model_ids(self) -> list[str]:
        return sorted(self.by_model)


def weighted_order(routes: list[Route], rng: random.Random | None = None) -> list[Route]:
    """Routes in a random order where heavier routes tend to come first (weighted shuffle)."""
    if len(routes) <= 1:
        return list(routes)
    draw = rng.random if rng is not None else random.random
    keyed = [(draw() ** (1.0 / r.weight) if r.weight > 0 else -1.0, i, r) for i, r in enumerate(routes)]
    keyed.sort(reverse=True)
    return [r for _, _, r in keyed if r.weight > 0] or list(routes)


class Router:
    """Holds this process's route table and one provider instance per route.

    The table is built from the built-in routes and the ModelRoute rows, tagged with the
    route version (`RouteTableVersion`, bumped after every committed route change). A
    process that changed a route itself reloads before its next request; every other
    process polls the version every GATEWAY_ROUTE_CHECK_SECONDS in the background, so no
    request waits for the check, and reloads when it moved. No Redis needed.

    The database being down does not take the table away: the current one is kept (and the
    version polled again once the database answers). A process that starts while it is down
    loads the last table any worker read, from the shared cache; without one, requests are a
    503 with `retry-after`.
    """

    def __init__(self, shared: SharedCache | None = None, database: Circuit | None = None) -> None:
        self.shared = shared or SharedCache()
        self.database = database or Circuit("database")
        self._table: RouteTable | None = None
        self._version: int | None = None  # the route version the table was built from
        self._generation = 0  # bumped by invalidate(): a change this process made
        self._built_generation = -1
        self._checked = 0.0
        self._loading: asyncio.Task[None] | None = None
        self._polling: asyncio.Task[None] | None = None
        self._providers: dict[Route, Provider] = {}

    def invalidate(self) -> None:
        """Reload before the next request (a route was changed by this process)."""
        self._generation += 1

    async def table(self) -> RouteTable:
        """The current table; reloaded first if this process changed a route."""
        if self._table is None or self._built_generation != self._generation:
            await self._reload()
        elif time.monotonic() - self._checked > settings.GATEWAY_ROUTE_CHECK_SECONDS and self._polling is None:
            self._checked = time.monotonic()
            self._polling = asyncio.get_running_loop().create_task(self._poll())
        assert self._table is not None
        return self._table

    async def _reload(self) -> None:
        """Build the table afresh; concurrent callers share one load."""
        if self._loading is None:
            self._loading = asyncio.get_running_loop().create_task(self._load())
        loading = self._loading
        try:
            await asyncio.shield(loading)
        finally:
            if self._loading is loading and loading.done():
                self._loading = None

    async def _load(self) -> None:
        generation = self._generation
        try:
            loaded = await run_db(self._read)
        except DATABASE_ERRORS as exc:  # from the connection's own upkeep, outside _read
            self.database.failed(exc)
            loaded = None
        if loaded is None:
            loaded = self._snapshot() if self._table is None else None
            if loaded is None:
                return  # keep the current table; the next poll tries the database again
        self._version, self._table = loaded
        self._built_generation = generation
        self._checked = time.monotonic()

    def _read(self) -> tuple[int | None, RouteTable] | None:
        """The version and the table from the database (sync), also kept as the shared snapshot;
        None while the database is down."""
        if not self.database.allow():
            return None
        try:
            version, routes = route_version(), database_routes()
        except DATABASE_ERRORS as exc:
            self.database.failed(exc)
            return None
        self.database.ok()
        self.shared.set(SNAPSHOT_KEY, (version, routes), None)
        return version, RouteTable.build(builtin_routes(), routes)

    def _snapshot(self) -> tuple[int | None, RouteTable]:
        """The last table any worker read (its version unknown, so the next poll reloads), or the 503."""
        snapshot = self.shared.get(SNAPSHOT_KEY)
        if snapshot is None:
            raise routes_unavailable(self.database)
        _, routes = snapshot
        return None, RouteTable.build(builtin_routes(), list(routes))

    async def _poll(self) -> None:
        """Reload when another process changed the routes (runs in the background)."""
        try:
            if self.database.allow() and await run_db(route_version) != self._version:
                await self._reload()
        except DATABASE_ERRORS as exc:
            self.database.failed(exc)
        except Exception:
            logger.warning("checking the route version failed; keeping the current table", exc_info=True)
        finally:
            self._polling = None

    def provider(self, route: Route) -> Provider:
        """The provider instance for `route` (created once, keeping its connection pool)."""
        instance = self._providers.get(route)
        if instance is None:
            instance = provider_class(route.provider)(route)
            self._providers[route] = instance
        return instance

    async def resolve(self, model: str) -> list[Route]:
        """The routes to try for `model`, in order: its own (weighted), then its fallbacks'."""
        table = await self.table()
        own = table.routes_for(model)
        if not own:
            raise ModelNotFound(model)
        ordered = weighted_order(own)
        seen = {model}
        for route in list(ordered):
            for fallback in route.fallbacks:
                if fallback in seen:
                    continue
                seen.add(fallback)
                ordered.extend(weighted_order(table.routes_for(fallback)))
        return ordered

    async def aclose(self) -> None:
        for instance in self._providers.values():
            await instance.aclose()
        self._providers.clear()

    def drop_providers(self) -> None:
        """Forget the provider instances, so the next request builds them from the environment
        again (tests change provider variables at run time; a deployment restarts instead)."""
        self._providers.clear()


def route_version() -> int:
    """The committed route version (sync)."""
    from .models import RouteTableVersion

    return RouteTableVersion.objects.filter(pk=1).values_list("version", flat=True).first() or 0


def routes_unavailable(database: Circuit) -> ServiceUnavailable:
    return dependency_unavailable("load its routing table", database.retry_after())


def bump_version() -> None:
    """Tell every process that the routes changed (call after the change committed)."""
    from django.db.models import F

    from .models import RouteTableVersion

    if not RouteTableVersion.objects.filter(pk=1).update(version=F("version") + 1):
        RouteTableVersion.objects.get_or_create(pk=1, defaults={"version": 1})
