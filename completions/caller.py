"""Who is calling and what they may do: the key, its owner, and the limits of each."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NANOS_PER_USD = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Limits:
    """One scope's limits (None = unlimited)."""

    allowed_models: tuple[str, ...] = ()
    rpm: int | None = None
    tpm: int | None = None
    token_budget: int | None = None
    spend_budget_nanos: int | None = None
    period: str = "month"

    @property
    def has_budget(self) -> bool:
        return self.token_budget is not None or self.spend_budget_nanos is not None

    @property
    def any(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.has_budget

    def allows(self, model: str) -> bool:
        return not self.allowed_models or model in self.allowed_models


def limits_from(row: dict[str, Any] | None) -> Limits:
    """Limits from a row's `LimitFields` values (a key's or a user's); blank fields are no limit."""
    if not row:
        return Limits()
    spend = row.get("spend_budget")
    return Limits(
        allowed_models=tuple(row.get("allowed_models") or ()),
        rpm=row.get("rpm_limit"),
        tpm=row.get("tpm_limit"),
        token_budget=row.get("token_budget"),
        spend_budget_nanos=int(spend * NANOS_PER_USD) if spend is not None else None,
        period=row.get("budget_period") or "month",
    )


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose counters a set of limits applies to: one key's (`key`), or one user's across all keys (`user`)."""

    kind: str
    id: int
    limits: Limits

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.id}"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the key, its owner, and the limits of both, as cached.

    The user's limits (set by staff) hold for all of the user's keys together; the key's
    own limits are further caps on that key. A model must be allowed by both lists.
    """

    key_id: int
    user_id: int
    prefix: str
    name: str
    expires_at: float | None  # epoch seconds
    revoked: bool
    key_limits: Limits = field(default_factory=Limits)
    user_limits: Limits = field(default_factory=Limits)

    def allows(self, model: str) -> bool:
        return self.key_limits.allows(model) and self.user_limits.allows(model)

    @property
    def limited(self) -> bool:
        """Whether any rate limit or budget applies (then requests need an estimate of their cost)."""
        return self.key_limits.any or self.user_limits.any

    @property
    def scopes(self) -> tuple[Scope, ...]:
        """The scopes this caller's requests count against (those with a limit)."""
        both = (Scope("key", self.key_id, self.key_limits), Scope("user", self.user_id, self.user_limits))
        return tuple(s for s in both if s.limits.any)
