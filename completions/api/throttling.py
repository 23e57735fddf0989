"""Rate limits of the management API: DRF throttles, one rate per signed-in user and one per
anonymous address (`DEFAULT_THROTTLE_RATES` "user" and "anon", from API_THROTTLE_USER and
API_THROTTLE_ANON).

DRF checks throttles after permissions, so a caller without credentials, or with a wrong
token, would get its 401 again and again without ever meeting a rate. `AnonymousFirst` checks
the anonymous rate right after authentication instead, for every view under /api/.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, throttling
from rest_framework.request import Request
from rest_framework.settings import api_settings


class LiveRate:
    """Read the rate per request, not once at import (so a settings reload applies)."""

    scope: str

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class UserRateThrottle(LiveRate, throttling.UserRateThrottle):
    """Per signed-in user; anonymous requests are AnonymousFirst's to count."""

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not (request.user and request.user.is_authenticated):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}


class AnonRateThrottle(LiveRate, throttling.AnonRateThrottle):
    """Per client address, for requests no credential signed in (`NUM_PROXIES` says how to find it)."""


class AnonymousFirst:
    """View mixin: an unauthenticated request, or one whose credentials failed, meets the anon rate."""

    def perform_authentication(self, request: Request) -> None:
        try:
            user = request.user
        except exceptions.APIException:
            self.check_anonymous_rate(request)  # DRF has made the request anonymous by now
            raise
        if not user.is_authenticated:
            self.check_anonymous_rate(request)

    def check_anonymous_rate(self, request: Request) -> None:
        throttle = AnonRateThrottle()
        if not throttle.allow_request(request, self):
            raise exceptions.Throttled(throttle.wait())
