"""python manage.py create_api_key --user NAME --name LABEL: create a key and print it once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from completions.keys import create_api_key


class Command(BaseCommand):
    help = "Create an API key for a user and print it. The key is shown only this once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="Username owning the key.")
        parser.add_argument("--name", required=True, help="A label for the key.")
        parser.add_argument("--expires-days", type=int, default=None, help="Expire after this many days.")
        parser.add_argument("--create-user", action="store_true", help="Create the user if it does not exist.")

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        username = options["user"]
        try:
            user = User.objects.get(username=username)
        except User.DoesNotExist:
            if not options["create_user"]:
                raise CommandError(f"No user named {username!r} (pass --create-user to create it).") from None
            user = User.objects.create_user(username=username)
        expires = None
        if options["expires_days"] is not None:
            expires = timezone.now() + timedelta(days=options["expires_days"])
        key, secret = create_api_key(user, options["name"], expires_at=expires)
        self.stderr.write(f"Created key {key.prefix}… for {username}. It is shown only once:")
        self.stdout.write(secret)
