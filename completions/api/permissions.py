"""Who may do what in the management API, beyond being signed in."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.permissions import BasePermission
from rest_framework.request import Request


class CreatesKeys(BasePermission):
    """Creating a key: staff always; other users only while GATEWAY_USERS_CREATE_KEYS is on."""

    message = "On this gateway only staff create API keys; ask them for one."

    def has_permission(self, request: Request, view: Any) -> bool:
        if getattr(view, "action", None) != "create":
            return True
        return bool(request.user.is_staff or settings.GATEWAY_USERS_CREATE_KEYS)
