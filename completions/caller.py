"""Who is calling and what they may do: the key, its owner and the key's effective limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Limits:
    """A key's effective limits (None = unlimited)."""

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


def effective(key: dict[str, Any], user: dict[str, Any] | None) -> Limits:
    """A key's limits with its user's defaults filled in (both as dicts of LimitFields values)."""
    user = user or {}

    def pick(name: str) -> Any:
        value = key.get(name)
        return value if value not in (None, "", []) else user.get(name)

    spend = pick("spend_budget")
    return Limits(
        allowed_models=tuple(pick("allowed_models") or ()),
        rpm=pick("rpm_limit"),
        tpm=pick("tpm_limit"),
        token_budget=pick("token_budget"),
        spend_budget_nanos=int(spend * 1_000_000_000) if spend is not None else None,
        period=pick("budget_period") or "month",
    )


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the key, its owner and its effective limits, as cached."""

    key_id: int
    user_id: int
    prefix: str
    name: str
    expires_at: float | None  # epoch seconds
    revoked: bool
    limits: Limits = field(default_factory=Limits)
