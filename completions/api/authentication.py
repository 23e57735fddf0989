"""How the management API checks `Authorization: Token …`: hashed tokens, never stored in clear."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from rest_framework import authentication, exceptions

from ..keys import hash_secret
from ..models import ManagementToken

LAST_USED_EVERY = timedelta(minutes=1)


class ManagementTokenAuthentication(authentication.TokenAuthentication):
    """DRF's `Token` scheme over `ManagementToken`: the presented token is hashed and looked up.

    DRF parses the header (and answers its malformed forms); only the lookup differs from
    `TokenAuthentication`, whose table kept tokens in plain text.
    """

    keyword = "Token"
    model = ManagementToken

    def authenticate_credentials(self, key: str) -> tuple[Any, ManagementToken]:
        token = ManagementToken.objects.select_related("user").filter(key_hash=hash_secret(key)).first()
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_EVERY:
            ManagementToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token
