"""Admin: a new key's secret is shown exactly once; the request log is read-only and filterable."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from completions.keys import hash_secret
from completions.models import APIKey, RequestLog


@pytest.fixture
def staff(django_user_model: Any) -> Client:
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    c = Client()
    c.force_login(admin)
    return c


@pytest.mark.django_db
def test_admin_creates_key_and_shows_it_once(staff: Client, django_user_model: Any) -> None:
    owner = django_user_model.objects.create_user("carol")
    response = staff.post("/admin/completions/apikey/add/", {"user": owner.pk, "name": "from admin"})
    assert response.status_code == 200
    html = response.content.decode()
    secret = re.search(r'id="new-api-key"[^>]*value="(sk-gw-[^"]+)"', html).group(1)
    key = APIKey.objects.get(key_hash=hash_secret(secret))
    assert key.user == owner and key.name == "from admin"
    assert "no-store" in response["Cache-Control"]
    change_page = staff.get(f"/admin/completions/apikey/{key.pk}/change/").content.decode()
    listing = staff.get("/admin/completions/apikey/").content.decode()
    assert secret not in change_page and secret not in listing
    assert key.prefix in listing


@pytest.mark.django_db
def test_admin_revoke_action(staff: Client, django_user_model: Any) -> None:
    from completions.keys import create_api_key

    key, _ = create_api_key(django_user_model.objects.create_user("dan"), "k")
    staff.post("/admin/completions/apikey/", {"action": "revoke_selected", "_selected_action": [key.pk]})
    key.refresh_from_db()
    assert key.revoked_at is not None


@pytest.mark.django_db
def test_request_log_admin_is_read_only_with_filters(staff: Client, django_user_model: Any) -> None:
    from completions.keys import create_api_key

    key, _ = create_api_key(django_user_model.objects.create_user("erin"), "k")
    RequestLog.objects.create(request_id="req_abc", model="mock-gpt-model", status_code=200, api_key=key)
    RequestLog.objects.create(request_id="req_def", model="other", status_code=404)
    page = staff.get("/admin/completions/requestlog/?status_code__exact=404")
    assert page.status_code == 200
    html = page.content.decode()
    assert "req_def" in html and "req_abc" not in html
    assert "By api key" in html and "By model" in html and "By status code" in html
    assert "req_abc" in staff.get("/admin/completions/requestlog/?q=req_abc").content.decode()
    assert staff.get("/admin/completions/requestlog/add/").status_code == 403
    row = RequestLog.objects.get(request_id="req_abc")
    assert staff.post(f"/admin/completions/requestlog/{row.pk}/delete/", {"post": "yes"}).status_code == 403
