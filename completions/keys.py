"""API key services: create, hash, revoke, and what a user may set on their own keys.
The admin, the API and the commands all call these.

Limits on a user's own keys (README, Security): staff set limits on users (their defaults) and on
keys; a key a non-staff user creates starts from the tightest of the user's limits and every
limit staff set on any of the user's keys (revoked and expired ones included), and the user may
only tighten it: lower a number, narrow the models, make a monthly budget a total one, bring
the expiry forward. An expired or revoked key's expiry is final for its owner.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from .models import APIKey, ManagementToken, UserLimits

if TYPE_CHECKING:
    from .recorder import RequestRecord

KEY_PREFIX = "sk-gw-"
VISIBLE_CHARS = 12
# Management API tokens (`Authorization: Token …`): another prefix, so neither is taken for the other.
TOKEN_PREFIX = "gwt-"
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
    user: AbstractBaseUser,
    name: str,
    *,
    expires_at: datetime | None = None,
    by_staff: bool = True,
    **fields: object,
) -> tuple[APIKey, str]:
    """Create a key for `user`; returns the row and the secret, which is never stored or shown again.

    Limits given here are staff's (the admin, staff in the API, the commands) unless `by_staff`
    is false: a user's own key gets `new_key_limits()` instead.
    """
    key = APIKey(user=user, name=name, expires_at=expires_at, **fields)
    if by_staff and any(f in fields for f in LIMIT_FIELDS):
        key.staff_limits = limit_values(key)
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


# ---- what users may set on their own keys ----------------------------------------------------

LIMIT_FIELDS = ("allowed_models", "rpm_limit", "tpm_limit", "token_budget", "spend_budget", "budget_period")
NUMERIC_LIMITS = ("rpm_limit", "tpm_limit", "token_budget", "spend_budget")


def limit_values(row: Any) -> dict[str, Any]:
    """The limit fields of a key or UserLimits row, JSON-safe (spend_budget as a string)."""
    values = {f: getattr(row, f) for f in LIMIT_FIELDS}
    if values["spend_budget"] is not None:
        values["spend_budget"] = str(values["spend_budget"])
    return values


def record_staff_limits(key: APIKey) -> None:
    """Remember the limits staff just set on `key`: keys its user creates are held to them."""
    key.staff_limits = limit_values(key)
    key.save(update_fields=["staff_limits"])


@dataclass(frozen=True)
class Bounds:
    """Limits as they bind once blanks are inherited: None is unlimited, or every model."""

    numbers: dict[str, Decimal | None]
    models: frozenset[str] | None
    period: str  # month | total


def _number(value: Any) -> Decimal | None:
    return None if value in (None, "") else Decimal(str(value))


def resolve(fields: dict[str, Any], defaults: dict[str, Any]) -> Bounds:
    """What a key with these limit fields is held to: its own values, else its user's defaults."""
    numbers = {f: _number(fields.get(f)) for f in NUMERIC_LIMITS}
    numbers = {f: n if n is not None else _number(defaults.get(f)) for f, n in numbers.items()}
    models = fields.get("allowed_models") or defaults.get("allowed_models") or None
    period = fields.get("budget_period") or defaults.get("budget_period") or "month"
    return Bounds(numbers, frozenset(models) if models else None, period)


def user_defaults(user: Any) -> dict[str, Any]:
    row = UserLimits.objects.filter(user=user).first()
    return limit_values(row) if row is not None else {}


def ceiling(user: Any) -> Bounds:
    """The most a key `user` creates may get: the tightest of their limits and of every limit
    staff set on any of their keys (revoked or expired ones too: revoking a restricted key must
    not lift its restriction)."""
    sources = [user_defaults(user)]
    sources += APIKey.objects.filter(user=user, staff_limits__isnull=False).values_list("staff_limits", flat=True)
    numbers: dict[str, Decimal | None] = {}
    for f in NUMERIC_LIMITS:
        values = [n for n in (_number(source.get(f)) for source in sources) if n is not None]
        numbers[f] = min(values) if values else None
    model_sets = [frozenset(source["allowed_models"]) for source in sources if source.get("allowed_models")]
    models = frozenset.intersection(*model_sets) if model_sets else None
    period = "total" if any(source.get("budget_period") == "total" for source in sources) else "month"
    return Bounds(numbers, models, period)


def _shown(number: Decimal) -> str:
    return format(number.normalize(), "f")


def loosened(old: Bounds, new: Bounds, fields: Any) -> dict[str, str]:
    """For each of `fields` where `new` allows more than `old`, what may be set instead."""
    errors: dict[str, str] = {}
    for f in fields:
        if f in NUMERIC_LIMITS:
            was, now = old.numbers[f], new.numbers[f]
            if was is not None and (now is None or now > was):
                errors[f] = f"Can only be lowered: at most {_shown(was)}."
        elif f == "allowed_models":
            if old.models is not None and (new.models is None or not new.models <= old.models):
                errors[f] = "Can only be narrowed, to models among: " + ", ".join(sorted(old.models)) + "."
        elif f == "budget_period" and old.period == "total" and new.period != "total":
            errors[f] = "Can only change from month to total, not back."
    return errors


def new_key_limits(user: Any, requested: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The limit fields of a key `user` creates themselves, and what in `requested` is refused.

    The key inherits (blank fields) wherever the user's defaults already are the ceiling, and
    carries the ceiling's value where something staff set on another key is tighter.
    """
    defaults = user_defaults(user)
    top, blank = ceiling(user), resolve({}, defaults)
    if top.models is not None and not top.models:
        return {}, {"allowed_models": "The model restrictions on your keys leave no model; ask staff."}
    fields: dict[str, Any] = {}
    for f in NUMERIC_LIMITS:
        given = requested.get(f)
        fields[f] = given if given is not None else (top.numbers[f] if top.numbers[f] != blank.numbers[f] else None)
    if requested.get("allowed_models"):
        fields["allowed_models"] = list(requested["allowed_models"])
    else:
        fields["allowed_models"] = sorted(top.models) if top.models is not None and top.models != blank.models else None
    if requested.get("budget_period"):
        fields["budget_period"] = requested["budget_period"]
    else:
        fields["budget_period"] = "total" if top.period != blank.period else ""
    return fields, loosened(top, resolve(fields, defaults), [f for f in requested if f in LIMIT_FIELDS])


def refused_changes(key: APIKey, changes: dict[str, Any]) -> dict[str, str]:
    """What in `changes` the key's (non-staff) owner may not do: loosen a limit, or move the
    expiry later, remove it, or touch it at all once the key has expired or been revoked."""
    current = limit_values(key)
    proposed = {**current, **{f: v for f, v in changes.items() if f in LIMIT_FIELDS}}
    if proposed["spend_budget"] is not None:
        proposed["spend_budget"] = str(proposed["spend_budget"])
    changed = [f for f in LIMIT_FIELDS if f in changes and not _same(proposed[f], current[f])]
    defaults = user_defaults(key.user)
    errors = loosened(resolve(current, defaults), resolve(proposed, defaults), changed)
    if "expires_at" in changes and changes["expires_at"] != key.expires_at:
        new = changes["expires_at"]
        if key.revoked_at is not None:
            errors["expires_at"] = "This key is revoked; its expiry can't be changed."
        elif key.expires_at is not None and key.expires_at <= timezone.now():
            errors["expires_at"] = "This key has expired; its expiry can't be changed."
        elif key.expires_at is not None and (new is None or new > key.expires_at):
            errors["expires_at"] = f"Can only be brought forward: at the latest {key.expires_at.isoformat()}."
    return errors


def _same(a: Any, b: Any) -> bool:
    if a in (None, "", []) and b in (None, "", []):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return sorted(a) == sorted(b)
    try:
        return _number(a) == _number(b)
    except (ArithmeticError, ValueError, TypeError):
        return bool(a == b)
