"""API key services: create, hash, revoke. The admin, the API and the commands all call these."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from .models import APIKey

if TYPE_CHECKING:
    from .recorder import RequestRecord

KEY_PREFIX = "sk-gw-"
VISIBLE_CHARS = 12
# The shared cache holds pickled `(auth.Caller, read_at)` pairs: change this when their shape
# changes, so workers of a new release never read an old release's entries.
CACHE_PREFIX = "apikey:v4:"


def generate_secret() -> str:
    """A new key: the recognisable prefix and 32 random bytes, URL-safe base64."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def cache_key(key_hash: str) -> str:
    """The shared-cache entry for a key's hash."""
    return CACHE_PREFIX + key_hash


def create_api_key(
    user: AbstractBaseUser, name: str, *, expires_at: datetime | None = None, **fields: object
) -> tuple[APIKey, str]:
    """Create a key for `user`; returns the row and the secret, which is never stored or shown again."""
    key = APIKey(user=user, name=name, expires_at=expires_at, **fields)
    secret = assign_secret(key)
    key.save()
    return key, secret


def assign_secret(key: APIKey) -> str:
    """Give an unsaved key a fresh secret (hash and visible prefix); returns the secret."""
    secret = generate_secret()
    key.prefix = secret[:VISIBLE_CHARS]
    key.key_hash = hash_secret(secret)
    return secret


def revoke_api_key(key: APIKey) -> None:
    """Revoke `key`; every worker stops accepting it within its in-process cache time."""
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])


LAST_USED_EVERY = 60.0  # seconds


class KeyUseRecorder:
    """Request-log hook: set `last_used_at`, at most once a minute per key.

    Runs on the log writer's thread inside its transaction; the conditional
    update makes the database skip the write when another worker did it recently.
    """

    def __init__(self) -> None:
        self._last_touch: dict[int, float] = {}

    def __call__(self, batch: Sequence[RequestRecord]) -> None:
        latest: dict[int, datetime] = {}
        for record in batch:
            if record.key_id is not None:
                latest[record.key_id] = record.created_at
        now = time.monotonic()
        for key_id, used_at in latest.items():
            if now - self._last_touch.get(key_id, -LAST_USED_EVERY) < LAST_USED_EVERY:
                continue
            self._last_touch[key_id] = now
            recent = used_at - timedelta(seconds=LAST_USED_EVERY)
            APIKey.objects.filter(pk=key_id).exclude(last_used_at__gt=recent).update(last_used_at=used_at)
