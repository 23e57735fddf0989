"""python manage.py demo_setup: the demo user and key `make run` prints (created once, then reused)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from completions.keys import create_api_key, hash_secret
from completions.models import APIKey


class Command(BaseCommand):
    help = "Create (or reuse) the demo user and API key and print the key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--key-file", default=str(Path(settings.BASE_DIR) / ".demo-key"))
        parser.add_argument("--user", default="demo")

    def handle(self, *args: Any, **options: Any) -> None:
        user, _ = get_user_model().objects.get_or_create(username=options["user"])
        key_file = Path(options["key_file"])
        # The key is stored hashed; only this local file (git-ignored) lets a later run show it again.
        secret = key_file.read_text().strip() if key_file.exists() else ""
        usable = (
            secret and APIKey.objects.filter(key_hash=hash_secret(secret), user=user, revoked_at__isnull=True).exists()
        )
        if not usable:
            _, secret = create_api_key(user, "demo key")
            key_file.write_text(secret + "\n")
            key_file.chmod(0o600)
        self.stdout.write(secret)
