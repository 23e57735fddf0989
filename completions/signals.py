"""Keep the caches honest: a saved key or route is re-read by every worker."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .app import current, routes_changed
from .keys import cache_key
from .models import APIKey, ModelRoute, UserLimits


@receiver((post_save, post_delete), sender=APIKey)
def _key_changed(sender: Any, instance: APIKey, **kwargs: Any) -> None:
    forget_cached(instance.key_hash)


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def _user_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    # A deactivated user's keys stop working.
    _forget_user_keys(instance.pk)


@receiver((post_save, post_delete), sender=UserLimits)
def _user_limits_changed(sender: Any, instance: UserLimits, **kwargs: Any) -> None:
    # The defaults a user's keys inherit changed.
    _forget_user_keys(instance.user_id)


def forget_cached(key_hash: str) -> None:
    """Drop a key from the shared cache so workers reload it (once Redis answers, if it is down)."""
    current().shared.delete(cache_key(key_hash))


def _forget_user_keys(user_id: int) -> None:
    for key_hash in APIKey.objects.filter(user_id=user_id).values_list("key_hash", flat=True):
        forget_cached(key_hash)


@receiver((post_save, post_delete), sender=ModelRoute)
def _route_changed(sender: Any, **kwargs: Any) -> None:
    # After the commit: a worker must never build the old table and take it for the new version.
    transaction.on_commit(routes_changed)
