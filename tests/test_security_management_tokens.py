"""Issue 9, finding 8: management API tokens are stored hashed and shown only once, at creation.

They used to live in plain text in DRF's `authtoken` table, listed in the admin."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import httpx
import pytest
from django.apps import apps
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client
from rest_framework.test import APIClient

from completions.keys import create_api_key
from completions.models import ManagementToken
from tests.conftest import ServerThread
from tests.openapi import assert_valid


@pytest.fixture
def staff(django_user_model: Any) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def create_in_admin(staff: Client, user: Any, name: str) -> tuple[str, Any]:
    page = staff.post("/admin/completions/managementtoken/add/", {"user": user.pk, "name": name})
    assert page.status_code == 200
    assert "no-store" in page["Cache-Control"]
    match = re.search(r'id="new-token"[^>]*value="([^"]+)"', page.content.decode())
    assert match, page.content.decode()[:2000]
    return match.group(1), page


def test_admin_creates_a_token_shows_it_once_and_stores_only_its_hash(
    gateway: ServerThread, staff: Client, django_user_model: Any
) -> None:
    alice = django_user_model.objects.create_user("alice")
    key, _ = create_api_key(alice, "alice's key")
    secret, _ = create_in_admin(staff, alice, "ci")

    token = ManagementToken.objects.get()
    assert token.user == alice and token.name == "ci"
    assert token.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert token.prefix == secret[:12] and len(secret) > 40
    assert secret not in repr(list(ManagementToken.objects.values()))
    # Never shown again: not in the list, not on its own page.
    listing = staff.get("/admin/completions/managementtoken/").content.decode()
    change = staff.get(f"/admin/completions/managementtoken/{token.pk}/change/").content.decode()
    assert token.prefix in listing and secret not in listing and secret not in change

    # It is what `Authorization: Token …` accepts, on the real server.
    api = httpx.Client(base_url=gateway.url, headers={"Authorization": f"Token {secret}"}, timeout=30)
    keys = api.get("/api/keys/")
    assert keys.status_code == 200 and [k["id"] for k in keys.json()] == [key.pk]
    token.refresh_from_db()
    assert token.last_used_at is not None

    # Deleting it in the admin revokes it.
    staff.post(f"/admin/completions/managementtoken/{token.pk}/delete/", {"post": "yes"})
    refused = api.get("/api/keys/")
    assert refused.status_code == 401
    assert_valid(refused.json(), "ErrorResponse")


@pytest.mark.django_db
@pytest.mark.parametrize("header", ["Token nope", "Token gwt-" + "x" * 43, "Token ", "Token a b", "Bearer x"])
def test_wrong_tokens_are_refused_with_401(header: str) -> None:
    response = APIClient().get("/api/keys/", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert_valid(response.json(), "ErrorResponse")


@pytest.mark.django_db
def test_a_token_of_a_deactivated_user_is_refused(staff: Client, django_user_model: Any) -> None:
    bob = django_user_model.objects.create_user("bob")
    secret, _ = create_in_admin(staff, bob, "")
    assert APIClient().get("/api/keys/", HTTP_AUTHORIZATION=f"Token {secret}").status_code == 200
    bob.is_active = False
    bob.save()
    assert APIClient().get("/api/keys/", HTTP_AUTHORIZATION=f"Token {secret}").status_code == 401


@pytest.mark.django_db
def test_a_tokens_owner_cannot_be_changed(staff: Client, django_user_model: Any) -> None:
    bob = django_user_model.objects.create_user("bob")
    eve = django_user_model.objects.create_user("eve")
    create_in_admin(staff, bob, "bob's")
    token = ManagementToken.objects.get()
    staff.post(f"/admin/completions/managementtoken/{token.pk}/change/", {"user": eve.pk, "name": "renamed"})
    token.refresh_from_db()
    assert (token.user, token.name) == (bob, "renamed")


@pytest.mark.django_db
def test_drf_plaintext_token_app_is_gone(staff: Client) -> None:
    assert not apps.is_installed("rest_framework.authtoken")
    assert "authtoken_token" not in connection.introspection.table_names()
    assert "/admin/authtoken/" not in staff.get("/admin/").content.decode()


def test_migration_hashes_old_plaintext_tokens_and_drops_their_table(
    transactional_db: Any, django_user_model: Any
) -> None:
    """A database that had DRF's authtoken keeps its tokens working, but no longer in plain text."""
    legacy = django_user_model.objects.create_user("legacy")
    old_key = "0123456789abcdef0123456789abcdef01234567"
    before_tokens = ("completions", "0002_limits_and_usage")
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes("completions")
    executor.migrate([before_tokens])
    stamp = "timestamp with time zone" if connection.vendor == "postgresql" else "datetime"
    with connection.cursor() as cursor:
        cursor.execute(
            f'CREATE TABLE authtoken_token ("key" varchar(40) PRIMARY KEY, created {stamp} NOT NULL, user_id integer)'
        )
        cursor.execute(
            'INSERT INTO authtoken_token ("key", created, user_id) VALUES (%s, %s, %s)',
            [
                old_key,
                "2026-01-02 03:04:05+00:00" if connection.vendor == "postgresql" else "2026-01-02 03:04:05",
                legacy.pk,
            ],
        )
    MigrationRecorder(connection).record_applied("authtoken", "0001_initial")
    content_type = apps.get_model("contenttypes", "ContentType").objects.create(app_label="authtoken", model="token")
    apps.get_model("auth", "Permission").objects.create(
        content_type=content_type, codename="view_token", name="Can view token"
    )

    executor = MigrationExecutor(connection)
    executor.migrate(latest)

    assert "authtoken_token" not in connection.introspection.table_names()
    assert not MigrationRecorder(connection).migration_qs.filter(app="authtoken").exists()
    assert not apps.get_model("contenttypes", "ContentType").objects.filter(app_label="authtoken").exists()
    token = ManagementToken.objects.get()
    assert token.user == legacy and token.key_hash == hashlib.sha256(old_key.encode()).hexdigest()
    assert token.created_at.isoformat() == "2026-01-02T03:04:05+00:00"
    assert old_key not in repr(list(ManagementToken.objects.values()))
    response = APIClient().get("/api/keys/", HTTP_AUTHORIZATION=f"Token {old_key}")
    assert response.status_code == 200 and response.json() == []
