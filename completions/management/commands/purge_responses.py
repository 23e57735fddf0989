"""python manage.py purge_responses: delete stored responses past their retention (run it daily)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from completions.responses.store import purge_expired


class Command(BaseCommand):
    help = "Delete stored Responses API responses older than GATEWAY_RESPONSES_RETENTION_DAYS."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"deleted {purge_expired()} expired stored responses")
