"""API key services: create, hash, revoke. The admin, the API and the commands all call these."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.utils import timezone

from .models import APIKey, ManagementToken

KEY_PREFIX = "sk-gw-"
VISIBLE_CHARS = 12
# Management API tokens (`Authorization: Token …`): another prefix, so neither is taken for the other.
TOKEN_PREFIX = "gwt-"
# The shared cache holds pickled `auth.Caller` objects: change this when Caller changes shape,
# so workers of a new release never read an old release's entries.
CACHE_PREFIX = "apikey:v1:"


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


def create_management_token(user: AbstractBaseUser, name: str = "") -> tuple[ManagementToken, str]:
    """Create a management API token for `user`; returns the row and the token, which is never stored."""
    token = ManagementToken(user=user, name=name)
    secret = assign_token_secret(token)
    token.save()
    return token, secret


def assign_token_secret(token: ManagementToken) -> str:
    """Give an unsaved management token a fresh secret (hash and visible prefix); returns the secret."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token.prefix = secret[:VISIBLE_CHARS]
    token.key_hash = hash_secret(secret)
    return secret


def revoke_api_key(key: APIKey) -> None:
    """Revoke `key`; every worker stops accepting it within its in-process cache time."""
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])


def forget_cached(key_hash: str) -> None:
    """Drop a key from the shared cache so workers reload it."""
    cache.delete(cache_key(key_hash))


LAST_USED_EVERY = 60.0  # seconds
_last_touch: dict[int, float] = {}


def record_key_use(batch: list) -> None:  # type: ignore[type-arg]
    """Request-log hook: set `last_used_at`, at most once a minute per key.

    Runs on the log writer's thread inside its transaction; the conditional
    update makes the database skip the write when another worker did it recently.
    """
    import time
    from datetime import timedelta

    latest: dict[int, object] = {}
    for record in batch:
        if record.key_id is not None:
            latest[record.key_id] = record.created_at
    now = time.monotonic()
    for key_id, used_at in latest.items():
        if now - _last_touch.get(key_id, -LAST_USED_EVERY) < LAST_USED_EVERY:
            continue
        _last_touch[key_id] = now
        APIKey.objects.filter(pk=key_id).exclude(last_used_at__gt=used_at - timedelta(seconds=LAST_USED_EVERY)).update(
            last_used_at=used_at
        )
