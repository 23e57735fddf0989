"""Issue 9, finding 7: every filter of /api/logs/, /api/usage/ and /api/keys/ is validated; a bad
value is a 400 in the envelope naming the parameter, never a 500."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from rest_framework.test import APIClient

from completions.keys import create_api_key
from completions.models import RequestLog
from tests.openapi import assert_valid


@pytest.fixture
def alice(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("alice", password="pw")


@pytest.fixture
def alice_api(alice: Any) -> APIClient:
    client = APIClient()
    client.force_login(alice)
    return client


@pytest.fixture
def staff_api(django_user_model: Any) -> APIClient:
    client = APIClient()
    client.force_login(django_user_model.objects.create_user("staff", password="pw", is_staff=True))
    return client


def assert_bad_param(response: Any, param: str) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert_valid(body, "ErrorResponse")
    assert body["error"]["param"] == param
    assert body["error"]["type"] == "invalid_request_error"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("since=yesterday", "since"),
        ("until=2026-13-45", "until"),
        ("since=0001-01-01T00:00:00%2B01:00", "since"),  # out of range once made UTC
        ("status=abc", "status"),
        ("status=42", "status"),
        ("key=abc", "key"),
        ("key=99999999999999999999999", "key"),  # past a 64-bit id
        ("stream=maybe", "stream"),
        ("user=abc", "user"),
        ("since=2026-11-02&until=2026-11-01", "since"),
        ("model=" + "m" * 201, "model"),
    ],
)
def test_malformed_log_filters_are_a_400_naming_the_parameter(alice_api: APIClient, query: str, param: str) -> None:
    assert_bad_param(alice_api.get(f"/api/logs/?{query}"), param)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("start=yesterday", "start"),
        ("end=2026-13-45", "end"),
        ("group_by=week", "group_by"),
        ("key=abc", "key"),
        ("key=99999999999999999999999", "key"),
        ("user=abc", "user"),
        ("start=2026-11-05&end=2026-11-01", "start"),
    ],
)
def test_malformed_usage_filters_are_a_400_naming_the_parameter(alice_api: APIClient, query: str, param: str) -> None:
    assert_bad_param(alice_api.get(f"/api/usage/?{query}"), param)


@pytest.mark.django_db
def test_usage_range_at_the_first_representable_day_is_answered(alice_api: APIClient) -> None:
    """`end` near year 1: the default start (30 days earlier) would fall before it."""
    response = alice_api.get("/api/usage/?end=0001-01-05&group_by=total")
    assert response.status_code == 200
    assert response.json()["start"] == "0001-01-01"


@pytest.mark.django_db
def test_staff_key_listing_rejects_a_malformed_user(staff_api: APIClient) -> None:
    assert_bad_param(staff_api.get("/api/keys/?user=abc"), "user")


@pytest.mark.django_db
def test_valid_log_filters_still_filter(alice_api: APIClient, alice: Any) -> None:
    key, _ = create_api_key(alice, "k")
    other, _ = create_api_key(alice, "other")
    for i, (day, status, stream, api_key) in enumerate(
        [(1, 200, False, key), (2, 500, True, key), (3, 200, True, other), (4, 429, False, key)]
    ):
        RequestLog.objects.create(
            request_id=f"r{i}",
            created_at=datetime(2026, 11, day, 12, tzinfo=UTC),
            user=alice,
            api_key=api_key,
            model="mock-gpt-model",
            status_code=status,
            stream=stream,
        )

    def ids(query: str) -> list[str]:
        response = alice_api.get(f"/api/logs/?{query}")
        assert response.status_code == 200, response.content
        return [row["request_id"] for row in response.json()["results"]]

    assert ids("since=2026-11-02&until=2026-11-04") == ["r2", "r1"]  # dates: from midnight, `until` exclusive
    assert ids("since=2026-11-02T12:00:00Z&until=2026-11-02T12:00:01") == ["r1"]
    assert ids("status=500") == ["r1"]
    assert ids("stream=false") == ["r3", "r0"]
    assert ids("stream=true") == ["r2", "r1"]
    assert ids(f"key={other.pk}") == ["r2"]
    assert ids("status=&model=&since=") == ["r3", "r2", "r1", "r0"]  # empty values: no filter
