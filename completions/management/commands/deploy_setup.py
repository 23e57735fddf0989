"""python manage.py deploy_setup: what a deployment runs once before its gateways start.

The compose `migrate` service runs it (one container, to completion, before any gateway:
gateways never migrate, so `docker compose up --scale gateway=N` can't race), and so do CI's
production tests. In order: apply the migrations; load the routing file when there is one
(GATEWAY_ROUTES_FILE, default config/routes.yaml, mounted at /app/config in compose); create
the first admin from DJANGO_SUPERUSER_USERNAME and DJANGO_SUPERUSER_PASSWORD (and
DJANGO_SUPERUSER_EMAIL) when both are set and no user of that name exists. Running it again
changes nothing that is already in place (an existing admin's password is left alone).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser


def default_routes_file() -> str:
    return os.environ.get("GATEWAY_ROUTES_FILE") or str(Path(settings.BASE_DIR) / "config" / "routes.yaml")


class Command(BaseCommand):
    help = "Migrate, load the routing file if present, and create the first admin from the environment."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--routes", default=None, help="Routing file (default: GATEWAY_ROUTES_FILE or config/routes.yaml)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=1, stdout=self.stdout)
        routes = Path(options["routes"] or default_routes_file())
        if routes.is_file():
            self.stdout.write(f"Loading routes from {routes}")
            call_command("load_routes", str(routes), stdout=self.stdout)
        else:
            self.stdout.write(f"No routing file at {routes}: built-in routes only.")
        self.create_admin()

    def create_admin(self) -> None:
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "").strip()
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD", "")
        if not username or not password:
            self.stdout.write("No first admin requested (DJANGO_SUPERUSER_USERNAME and DJANGO_SUPERUSER_PASSWORD).")
            return
        User = get_user_model()
        if User.objects.filter(username=username).exists():
            self.stdout.write(f"Admin {username!r} exists: left as it is.")
            return
        User.objects.create_superuser(
            username=username, email=os.environ.get("DJANGO_SUPERUSER_EMAIL", ""), password=password
        )
        self.stdout.write(f"Created admin {username!r}.")
