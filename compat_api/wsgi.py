"""WSGI entry point (the gateway is meant to run under ASGI; this serves the admin only)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "compat_api.settings")
application = get_wsgi_application()
