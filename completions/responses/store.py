"""Stored responses: save, load, delete and list input items, always within one user's responses.

Selectors and services over `StoredResponse`, run off the event loop with `run_db`.
Another user's response, an unknown id and an expired one are all "not found".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from ..db import run_db
from ..errors import NotFound
from ..models import StoredResponse


@dataclass(frozen=True)
class Stored:
    """What continuing or showing a stored response needs."""

    id: str
    response: dict[str, Any]
    input_items: list[dict[str, Any]]

    @property
    def context(self) -> list[dict[str, Any]]:
        """The items a response continuing this one starts from: its input, then its output."""
        return [*self.input_items, *(self.response.get("output") or [])]


def not_found(response_id: str, param: str | None = None) -> NotFound:
    return NotFound(f"No response with id '{response_id}' was found.", param=param, code="response_not_found")


def _live(user_id: int) -> Any:
    return StoredResponse.objects.filter(user_id=user_id).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
    )


def expiry() -> Any:
    days = settings.GATEWAY_RESPONSES_RETENTION_DAYS
    return timezone.now() + timedelta(days=days) if days else None


def _save(user_id: int, key_id: int | None, response: dict[str, Any], input_items: list[dict[str, Any]]) -> None:
    StoredResponse.objects.create(
        id=response["id"],
        user_id=user_id,
        api_key_id=key_id,
        model=str(response.get("model") or "")[:200],
        previous_response_id=response.get("previous_response_id") or "",
        response=response,
        input_items=input_items,
        expires_at=expiry(),
    )


def _load(user_id: int, response_id: str) -> Stored | None:
    row = _live(user_id).filter(id=response_id).values("id", "response", "input_items").first()
    return Stored(**row) if row else None


REFERENCE_SCAN = 50  # how many of the user's latest stored responses `item_reference` looks through


def _find_items(user_id: int, ids: list[str]) -> dict[str, dict[str, Any]]:
    wanted, found = set(ids), {}
    rows = _live(user_id).order_by("-created_at").values_list("response", "input_items")[:REFERENCE_SCAN]
    for response, input_items in rows:
        for item in [*(response.get("output") or []), *input_items]:
            item_id = item.get("id")
            if item_id in wanted and item_id not in found:
                found[item_id] = item
        if len(found) == len(wanted):
            break
    return found


async def find_items(user_id: int, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The items with these ids among the user's latest stored responses (outputs and inputs)."""
    return await run_db(_find_items, user_id, ids) if ids else {}


def _delete(user_id: int, response_id: str) -> bool:
    deleted, _ = _live(user_id).filter(id=response_id).delete()
    return bool(deleted)


def purge_expired() -> int:
    """Delete every expired stored response; how many were deleted."""
    deleted, _ = StoredResponse.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted


async def save(user_id: int, key_id: int | None, response: dict[str, Any], input_items: list[dict[str, Any]]) -> None:
    await run_db(_save, user_id, key_id, response, input_items)


async def load(user_id: int, response_id: str, param: str | None = None) -> Stored:
    stored = await run_db(_load, user_id, response_id)
    if stored is None:
        raise not_found(response_id, param)
    return stored


async def delete(user_id: int, response_id: str) -> None:
    if not await run_db(_delete, user_id, response_id):
        raise not_found(response_id)


def page(items: list[dict[str, Any]], *, limit: int, order: str, after: str | None) -> dict[str, Any]:
    """One page of `ResponseItemList` (pure): `order` asc or desc, starting after the item `after`."""
    ordered = items if order == "asc" else list(reversed(items))
    if after is not None:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise NotFound(f"No input item with id '{after}' in this response.", param="after")
        ordered = ordered[ids.index(after) + 1 :]
    data = ordered[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ordered) > limit,
    }
