"""Issue 9, finding 13: the lean /v1 handler checks Host against ALLOWED_HOSTS and sends the
security headers Django's middleware sends on the admin and the API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.test import override_settings

from tests.conftest import ServerThread, log_rows
from tests.openapi import assert_valid

HI = [{"role": "user", "content": "hi"}]
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "x-frame-options": "DENY",
}


def assert_security_headers(response: httpx.Response) -> None:
    assert {name: response.headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS
    assert "strict-transport-security" not in response.headers  # plain HTTP, and no HSTS configured


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/chat/completions"), ("GET", "/v1/healthz")],
)
@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.evil.example", "bad host!", ""])
def test_a_host_outside_allowed_hosts_is_a_400_in_the_envelope(
    raw: httpx.Client, method: str, path: str, host: str
) -> None:
    response = raw.request(
        method,
        path,
        json={"model": "mock-gpt-model", "messages": HI} if method == "POST" else None,
        headers={"Host": host, "x-request-id": "host-check-1"},
    )
    assert response.status_code == 400
    assert_valid(response.json(), "ErrorResponse")
    assert response.json()["error"]["code"] == "invalid_host"
    assert response.headers["x-request-id"] == "host-check-1"
    assert_security_headers(response)


def test_allowed_hosts_are_served_and_rejected_requests_are_not(raw: httpx.Client, gateway: ServerThread) -> None:
    for host in (f"127.0.0.1:{gateway.port}", "localhost", "LOCALHOST:1234", "[::1]:8000"):
        response = raw.post(
            "/v1/chat/completions", json={"model": "mock-gpt-model", "messages": HI}, headers={"Host": host}
        )
        assert response.status_code == 200, host
    raw.post("/v1/chat/completions", json={"model": "mock-gpt-model", "messages": HI}, headers={"Host": "evil.example"})
    assert len(log_rows()) == 4  # the refused request never reached a view


def test_liveness_answers_under_any_host(raw: httpx.Client) -> None:
    """Probes ask for /healthz by the machine's address, which ALLOWED_HOSTS need not list."""
    response = raw.get("/healthz", headers={"Host": "10.0.0.7:8000"})
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert_security_headers(response)


def test_admin_and_gateway_agree_on_hosts(raw: httpx.Client) -> None:
    """The stock handler (admin) already refused unknown hosts; the gateway now does the same."""
    admin = raw.get("/admin/login/", headers={"Host": "evil.example"})
    gateway = raw.get("/v1/models", headers={"Host": "evil.example"})
    assert (admin.status_code, gateway.status_code) == (400, 400)


def test_every_gateway_response_carries_the_security_headers(raw: httpx.Client) -> None:
    ok = raw.post("/v1/chat/completions", json={"model": "mock-gpt-model", "messages": HI})
    assert ok.status_code == 200
    assert_security_headers(ok)
    with raw.stream(
        "POST", "/v1/chat/completions", json={"model": "mock-gpt-model", "messages": HI, "stream": True}
    ) as s:
        assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
        assert_security_headers(s)
        s.read()
    for response in (
        raw.get("/v1/nope"),  # 404
        raw.post("/v1/chat/completions", content=b"{not json"),  # 400
        raw.post("/v1/chat/completions", content=b"x" * 17_000_000),  # 413, refused before the view
        httpx.get(str(raw.base_url) + "/v1/models"),  # 401, no key
    ):
        assert response.status_code >= 400
        assert_security_headers(response)


def test_gateway_headers_match_what_django_sends_on_the_api(raw: httpx.Client) -> None:
    api = raw.get("/api/keys/")  # the stock handler and Django's middleware
    gateway = raw.get("/v1/models")
    assert {name: api.headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS
    assert {name: gateway.headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS


@pytest.fixture
def hsts_server(gateway: ServerThread) -> Iterator[ServerThread]:
    """A gateway handler built with HSTS configured (the handler computes its headers once, at start)."""
    with override_settings(
        SECURE_HSTS_SECONDS=31536000,
        SECURE_HSTS_INCLUDE_SUBDOMAINS=True,
        SECURE_HSTS_PRELOAD=True,
        SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"),
    ):
        from completions.handler import GatewayASGIHandler

        handler = GatewayASGIHandler()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    await send({"type": message["type"] + ".complete"})
                    if message["type"] == "lifespan.shutdown":
                        return
            await handler(scope, receive, send)

        server = ServerThread(app).start()
        yield server
        server.stop()


def test_hsts_is_sent_on_secure_requests_when_configured(hsts_server: ServerThread, api_key: str) -> None:
    headers = {"Authorization": f"Bearer {api_key}"}
    secure = httpx.get(hsts_server.url + "/v1/models", headers={**headers, "X-Forwarded-Proto": "https"})
    assert secure.status_code == 200
    assert secure.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains; preload"
    refused = httpx.get(hsts_server.url + "/v1/models", headers={"Host": "evil.example", "X-Forwarded-Proto": "https"})
    assert refused.status_code == 400
    plain = httpx.get(hsts_server.url + "/v1/models", headers=headers)
    assert plain.status_code == 200 and "strict-transport-security" not in plain.headers
    assert plain.headers["x-frame-options"] == "DENY"
