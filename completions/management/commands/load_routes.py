"""python manage.py load_routes FILE [--replace]: apply a routing file to the ModelRoute table."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from completions.route_config import RouteFileError, apply, read_file


class Command(BaseCommand):
    help = "Create or update model routes from a YAML or JSON routing file (see routes.example.yaml)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file")
        parser.add_argument("--replace", action="store_true", help="Delete routes that are not in the file.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = apply(read_file(options["file"]), replace=options["replace"])
        except (RouteFileError, OSError) as exc:
            raise CommandError(str(exc)) from None
        for verb, items in (("created", result.created), ("updated", result.updated), ("deleted", result.deleted)):
            for item in items:
                self.stdout.write(f"{verb}: {item}")
        self.stdout.write(
            f"{len(result.created)} created, {len(result.updated)} updated, "
            f"{len(result.unchanged)} unchanged, {len(result.deleted)} deleted"
        )
