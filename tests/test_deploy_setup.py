"""The compose `migrate` service's command, run on an empty database as the first `docker compose up` runs it.

It migrates, loads the mounted routing file and creates the first admin from the environment;
run again, it changes nothing. The database is a new one (on the test's PostgreSQL server under
CI, else a SQLite file), never the suite's.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from tests.deployment import ROOT, service
from tests.processes import database_url

ROUTES = """
routes:
  - {model: first-model, provider: mock, upstream_model: first-upstream}
"""


@pytest.fixture
def empty_database(django_db_setup: Any, django_db_blocker: Any, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """(DATABASE_URL, a function running one SQL query there) for a database with no tables."""
    with django_db_blocker.unblock():
        vendor = connection.vendor
        settings_dict = dict(connection.settings_dict)
    if vendor == "sqlite":
        path = tmp_path / "fresh.sqlite3"

        def query(sql: str) -> list[tuple[Any, ...]]:
            with sqlite3.connect(path) as db:
                return db.execute(sql).fetchall()

        yield f"sqlite:///{path}", query
        return
    import psycopg

    name = f"gw_fresh_{uuid.uuid4().hex[:8]}"
    server = database_url().rsplit("/", 1)[0]
    admin = psycopg.connect(f"{server}/{settings_dict['NAME']}", autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')

    def query(sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(f"{server}/{name}") as db:
            return db.execute(sql).fetchall()

    try:
        yield f"{server}/{name}", query
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_the_migrate_service_sets_up_an_empty_database(empty_database: tuple[str, Any], tmp_path: Path) -> None:
    url, query = empty_database
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "GATEWAY_ROUTES_FILE": str(routes),  # compose: ./config mounted at /app/config
        "DJANGO_SUPERUSER_USERNAME": "admin",
        "DJANGO_SUPERUSER_PASSWORD": "first-" + uuid.uuid4().hex,
        "DJANGO_SUPERUSER_EMAIL": "ops@example.com",
    }
    command = service("migrate")["command"]
    assert command[0] == "python"
    run = [sys.executable, *command[1:]]

    first = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert first.returncode == 0, first.stderr
    assert "Created admin 'admin'" in first.stdout and "1 created" in first.stdout
    migrations = {row[0] for row in query("SELECT app FROM django_migrations")}
    assert {"completions", "auth", "admin", "axes"} <= migrations
    assert query("SELECT username, is_superuser, is_staff FROM auth_user") == [("admin", True, True)]
    assert query("SELECT model_name FROM completions_modelroute") == [("first-model",)]
    pending = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--check"], cwd=ROOT, env=env, capture_output=True, timeout=120
    )
    assert pending.returncode == 0, "migrations left unapplied"

    again = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    assert "No migrations to apply" in again.stdout and "exists: left as it is" in again.stdout
    assert "1 unchanged" in again.stdout
    assert query("SELECT count(*) FROM auth_user") == [(1,)]
