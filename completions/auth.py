"""How API keys are checked: header parsing, a two-level cache, and the 401 messages.

A lookup costs no database query in the common case: a key is trusted in process
for GATEWAY_KEY_CACHE_SECONDS, then re-read from Django's cache (shared by all
workers when REDIS_URL is set), and only then from the database. Saving or
revoking a key deletes its shared entry, so every worker sees the change within
the in-process time. Neither Redis nor the database being down makes a lookup
fail with a 500; see `KeyCache`.
"""

from __future__ import annotations

import asyncio
import time

from django.conf import settings
from django.http import HttpRequest

from .caller import Caller, limits_from
from .circuit import DATABASE_ERRORS, Circuit
from .db import run_db
from .errors import AuthenticationFailed, ServiceUnavailable, dependency_unavailable
from .keys import KEY_PREFIX, cache_key, hash_secret
from .models import APIKey, UserLimits
from .shared import SharedCache

LIMIT_FIELDS = ("allowed_models", "rpm_limit", "tpm_limit", "token_budget", "spend_budget", "budget_period")

SHARED_TTL = 300  # seconds a shared entry is trusted (changes delete it sooner); kept longer for outages
UNKNOWN_TTL = 10  # seconds an unknown key is remembered, so a flood of bad keys doesn't reach the database
MAX_LOCAL_ENTRIES = 50_000


_UNKNOWN = "unknown"


def bearer_token(request: HttpRequest) -> str | None:
    """The key from `Authorization: Bearer …` or `x-api-key`."""
    meta = request.META
    header = meta.get("HTTP_AUTHORIZATION")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    token = meta.get("HTTP_X_API_KEY")
    return token.strip() if token and token.strip() else None


def masked(secret: str) -> str:
    """A key shown in an error: enough to recognise it, not enough to use it."""
    if len(secret) <= 10:
        return "*" * len(secret)
    return f"{secret[:8]}{'*' * 8}{secret[-4:]}"


async def authenticate(request: HttpRequest, keys: KeyCache) -> Caller:
    """The caller behind the request's key, or AuthenticationFailed with a message per case."""
    secret = bearer_token(request)
    if secret is None:
        raise AuthenticationFailed(
            "You didn't provide an API key. You need to provide your API key in an Authorization "
            "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
    caller = await keys.lookup(secret) if secret.startswith(KEY_PREFIX) else _UNKNOWN
    if isinstance(caller, str):
        raise AuthenticationFailed(f"Incorrect API key provided: {masked(secret)}.")
    if caller.revoked:
        raise AuthenticationFailed("This API key has been revoked.")
    if caller.expires_at is not None and caller.expires_at <= time.time():
        raise AuthenticationFailed("This API key has expired.")
    return caller


class KeyCache:
    """This process's view of API keys: a local cache in front of the shared cache and the database.

    Redis and the database may each be down. Without Redis, lookups go to the database. Without
    the database, a key's last known state (from this process or the shared cache) keeps being
    used for up to GATEWAY_KEY_STALE_SECONDS after it was read; a key known nowhere is a 503 with
    `retry-after`, never a 500.
    """

    def __init__(self, shared: SharedCache | None = None, database: Circuit | None = None) -> None:
        self.shared = shared or SharedCache()
        self.database = database or Circuit("database")
        # key hash -> (caller or _UNKNOWN, monotonic time the entry expires, epoch time it was read from the DB)
        self._local: dict[str, tuple[Caller | str, float, float]] = {}
        self._inflight: dict[str, asyncio.Task[Caller | str]] = {}
        self._background: set[asyncio.Task[Caller | str]] = set()

    async def lookup(self, secret: str) -> Caller | str:
        """Resolve a key through the local cache, the shared cache, then the database.

        An entry that expired less than one cache period ago is still answered at once
        while a background task re-reads it (stale-while-revalidate): a busy key never
        makes its requests queue behind a lookup, and a revoked key is refused within
        one cache period plus the time of one lookup.
        """
        key_hash = hash_secret(secret)
        now = time.monotonic()
        hit = self._local.get(key_hash)
        if hit is not None:
            value, expires, _ = hit
            if expires > now:
                return value
            if expires + settings.GATEWAY_KEY_CACHE_SECONDS > now:
                if key_hash not in self._inflight:
                    self._start_refresh(key_hash)
                return value
        pending = self._inflight.get(key_hash) or self._start_refresh(key_hash)
        return await asyncio.shield(pending)

    def _start_refresh(self, key_hash: str) -> asyncio.Task[Caller | str]:
        """One task re-reading a key; every concurrent caller shares it."""
        task = asyncio.get_running_loop().create_task(self._refresh(key_hash))
        self._inflight[key_hash] = task
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_finished)
        return task

    async def _refresh(self, key_hash: str) -> Caller | str:
        """Re-read one key into the local cache."""
        try:
            try:
                value, read_at = await run_db(self._load, key_hash)
            except DATABASE_ERRORS as exc:  # from the connection's own upkeep, outside _load
                self.database.failed(exc)
                value, read_at = self._last_known(key_hash)
            except ServiceUnavailable:
                value, read_at = self._last_known(key_hash)
        finally:
            del self._inflight[key_hash]
        if len(self._local) >= MAX_LOCAL_ENTRIES:
            self._local.clear()
        self._local[key_hash] = (value, time.monotonic() + settings.GATEWAY_KEY_CACHE_SECONDS, read_at)
        return value

    def _last_known(self, key_hash: str) -> tuple[Caller | str, float]:
        """This process's last reading of a key, while the database can't be asked (then it is re-asked
        after one more cache period); or the 503."""
        hit = self._local.get(key_hash)
        if hit is not None and isinstance(hit[0], Caller) and _usable_while_down(hit[2]):
            return hit[0], hit[2]
        raise keys_unavailable(self.database)

    def _load(self, key_hash: str) -> tuple[Caller | str, float]:
        """(the key's caller or _UNKNOWN, epoch time that was read from the database): the shared cache,
        then the database (runs on the database thread)."""
        entry = self.shared.get(cache_key(key_hash))
        now = time.time()
        if entry is not None:
            value, read_at = entry
            fresh_for = UNKNOWN_TTL if isinstance(value, str) else SHARED_TTL
            # An entry written before Redis came back may miss a change the outage hid: re-read it.
            if now - read_at < fresh_for and read_at >= self.shared.circuit.recovered_at:
                return value, read_at
        if self.database.allow():
            try:
                value = _read(key_hash)
            except DATABASE_ERRORS as exc:
                self.database.failed(exc)
            else:
                self.database.ok()
                ttl = UNKNOWN_TTL if isinstance(value, str) else max(SHARED_TTL, settings.GATEWAY_KEY_STALE_SECONDS)
                self.shared.set(cache_key(key_hash), (value, now), ttl)
                return value, now
        if entry is not None and isinstance(entry[0], Caller) and _usable_while_down(entry[1]):
            return entry[0], entry[1]
        raise keys_unavailable(self.database)

    def clear(self) -> None:
        """Forget every key trusted in this process."""
        self._local.clear()


def _finished(task: asyncio.Task[Caller | str]) -> None:
    """A refresh ended; a background one's error (the 503 of an outage) is not left unretrieved."""
    if not task.cancelled():
        task.exception()


def _usable_while_down(read_at: float) -> bool:
    return time.time() - read_at < settings.GATEWAY_KEY_STALE_SECONDS


def keys_unavailable(database: Circuit) -> ServiceUnavailable:
    return dependency_unavailable("check this API key", database.retry_after())


def _read(key_hash: str) -> Caller | str:
    """A key's caller from the database, or _UNKNOWN."""
    row = (
        APIKey.objects.filter(key_hash=key_hash)
        .values("id", "user_id", "prefix", "name", "expires_at", "revoked_at", "user__is_active", *LIMIT_FIELDS)
        .first()
    )
    if row is None:
        return _UNKNOWN
    return Caller(
        key_id=row["id"],
        user_id=row["user_id"],
        prefix=row["prefix"],
        name=row["name"],
        expires_at=row["expires_at"].timestamp() if row["expires_at"] else None,
        revoked=row["revoked_at"] is not None or not row["user__is_active"],
        key_limits=limits_from(row),
        user_limits=limits_from(UserLimits.objects.filter(user_id=row["user_id"]).values(*LIMIT_FIELDS).first()),
    )
