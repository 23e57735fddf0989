"""The deployment without Docker: two gateways run by the production command behind the repository's nginx.

What docker-compose.yml runs, run here as CI can (tests/deployment.py): two instances of the
image's CMD (`gunicorn -c gunicorn.conf.py`, two workers each) on the test database (PostgreSQL
under CI) and one Redis (the machine's under CI, else a private one), behind Debian's nginx
with deploy/nginx.conf.template rendered as the nginx image renders it. Through the proxy, a
key's rate limit, its revocation and its usage totals hold across both instances; streams
are not buffered; /metrics adds up every worker of an instance and is refused through the
proxy; every line the servers print is JSON, and no line holds a prompt or a key.
(test_deploy_setup.py runs the `migrate` service's command on an empty database.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from django.conf import settings

from completions.keys import create_api_key, create_management_token
from completions.models import ModelRoute, RequestLog
from tests.deployment import Nginx, metric_total, worker_pids
from tests.processes import GatewayProcess
from tests.services import PrivateRedis

pytestmark = pytest.mark.slow
METRICS_TOKEN = "metrics-" + "t" * 24
PROMPT_MARKER = "PROMPT-TEXT-MUST-NOT-BE-LOGGED"


@dataclass
class Deployment:
    a: GatewayProcess
    b: GatewayProcess
    proxy: Nginx
    logs: Path

    def instance_of(self, pid: str) -> str:
        if int(pid) in worker_pids(self.a.proc.pid):  # type: ignore[union-attr]
            return "a"
        if int(pid) in worker_pids(self.b.proc.pid):  # type: ignore[union-attr]
            return "b"
        return "?"


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    if settings.REDIS_URL:
        yield settings.REDIS_URL
    else:
        with PrivateRedis() as private:
            yield private.url


@pytest.fixture(scope="module")
def deployment(django_db_setup: Any, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    logs = tmp_path_factory.mktemp("deployment-logs")
    common = {
        "REDIS_URL": redis_url,
        "GATEWAY_DEBUG_HEADERS": "true",
        "GATEWAY_KEY_CACHE_SECONDS": "1",
        "GATEWAY_ROUTE_CHECK_SECONDS": "0.2",
        "API_NUM_PROXIES": "1",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
    }
    a = GatewayProcess("gunicorn", workers=2, env=common, output=logs / "a.log")
    # b serves /metrics only with the token (its allowed network is not the loopback).
    b_env = {**common, "GATEWAY_METRICS_NETWORKS": "10.255.255.0/24", "GATEWAY_METRICS_TOKEN": METRICS_TOKEN}
    b = GatewayProcess("gunicorn", workers=2, env=b_env, output=logs / "b.log")
    with a, b, Nginx([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]) as proxy:
        yield Deployment(a, b, proxy, logs)


@pytest.fixture(autouse=True)
def log_written(deployment: Deployment, transactional_db: Any) -> Iterator[None]:
    """After each test, wait until both instances wrote their request logs: the test database is
    emptied next, and on PostgreSQL that TRUNCATE would deadlock with a writer's insert. (Asking for
    `transactional_db` sets this fixture up after it, so it is torn down, and waits, before the
    database is emptied; an autouse fixture is otherwise set up first and torn down last.)"""
    yield
    deadline = time.monotonic() + 30
    for gw, headers in ((deployment.a, {}), (deployment.b, {"Authorization": f"Bearer {METRICS_TOKEN}"})):
        while time.monotonic() < deadline:
            text = httpx.get(gw.url + "/metrics", headers=headers, timeout=10).text
            if metric_total(text, "gateway_log_backlog_rows") == 0:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"{gw.url} did not write its request log")


def chat(url: str, key: str, *, stream: bool = False, model: str = "mock-gpt-model", **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hello there"}], "stream": stream, **extra}
    return httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def fire(url: str, key: str, n: int, **kwargs: Any) -> list[httpx.Response]:
    """n requests, 8 at a time, each on a connection of its own."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda _: chat(url, key, **kwargs), range(n)))


def wait_for_rows(n: int, **filters: Any) -> list[RequestLog]:
    deadline = time.monotonic() + 20
    while RequestLog.objects.filter(**filters).count() < n and time.monotonic() < deadline:
        time.sleep(0.1)
    return list(RequestLog.objects.filter(**filters))


def test_the_sdk_works_through_the_proxy(deployment: Deployment, transactional_db: Any, django_user_model: Any) -> None:
    _, key = create_api_key(django_user_model.objects.create_user("sdk"), "k")
    for base in (deployment.proxy.url + "/v1", deployment.proxy.url):
        client = openai.OpenAI(api_key=key, base_url=base, max_retries=0, timeout=30)
        answer = client.chat.completions.create(model="mock-gpt-model", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content
        chunks = list(
            client.chat.completions.create(
                model="mock-gpt-model",
                messages=[{"role": "user", "content": "one two three"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
        assert len(client.embeddings.create(model="mock-gpt-model", input=["a", "b"]).data) == 2
    http = httpx.Client(base_url=deployment.proxy.url, timeout=30)
    assert http.get("/healthz").json()["status"] == "ok"
    for url in (deployment.proxy.url, deployment.a.url, deployment.b.url):  # what the healthchecks probe
        ready = httpx.get(url + "/readyz", headers={"Host": "10.0.0.7:8000"}, timeout=10)
        assert ready.status_code == 200, ready.text
    assert http.get("/metrics").status_code == 404  # never through the proxy
    echoed = http.get("/v1/models", headers={"Authorization": f"Bearer {key}", "x-request-id": "through-nginx-1"})
    assert echoed.headers["x-request-id"] == "through-nginx-1"
    made = http.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert len(made.headers["x-request-id"]) >= 16  # nginx's own id when the client sent none


def test_request_size_limits_answer_in_the_envelope(deployment: Deployment) -> None:
    body_over_gateway = b'{"model": "m", "x": "' + b"a" * (16 * 1024 * 1024 + 10) + b'"}'
    r = httpx.post(deployment.proxy.url + "/v1/chat/completions", content=body_over_gateway, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert "x-request-id" in r.headers  # the gateway's own 413
    body_over_proxy = b"a" * (18 * 1024 * 1024)
    r = httpx.post(deployment.proxy.url + "/v1/chat/completions", content=body_over_proxy, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"  # nginx's, same envelope


def test_a_rate_limit_holds_across_both_instances(
    deployment: Deployment, transactional_db: Any, django_user_model: Any
) -> None:
    _, key = create_api_key(django_user_model.objects.create_user("limited"), "k", rpm_limit=10)
    answers = fire(deployment.proxy.url, key, 30)
    assert sorted(r.status_code for r in answers) == [200] * 10 + [429] * 20
    instances = {deployment.instance_of(r.headers["x-gateway-worker"]) for r in answers}
    assert instances == {"a", "b"}, "nginx must have spread the requests over both instances"


def test_a_revoked_key_is_refused_by_both_instances(
    deployment: Deployment, transactional_db: Any, django_user_model: Any
) -> None:
    owner = django_user_model.objects.create_user("revoked")
    key_row, key = create_api_key(owner, "k")
    staff = django_user_model.objects.create_user("ops", is_staff=True)
    _, token = create_management_token(staff)
    warm = fire(deployment.proxy.url, key, 8)
    assert [r.status_code for r in warm] == [200] * 8
    assert {deployment.instance_of(r.headers["x-gateway-worker"]) for r in warm} == {"a", "b"}

    revoked = httpx.post(
        f"{deployment.proxy.url}/api/keys/{key_row.pk}/revoke/", headers={"Authorization": f"Token {token}"}
    )
    assert revoked.status_code == 200, revoked.text
    at = time.monotonic()
    # Each worker trusts its entry for GATEWAY_KEY_CACHE_SECONDS (1 s here), then answers from it once
    # more while re-reading it (stale-while-revalidate, completions/auth.py): so every worker of both
    # instances refuses the key at most two cache periods (and a lookup) after the revocation.
    time.sleep(max(0.0, at + 2 * 1 + 0.5 - time.monotonic()))
    direct = [chat(gw.url, key).status_code for gw in (deployment.a, deployment.b) for _ in range(16)]
    through = [r.status_code for r in fire(deployment.proxy.url, key, 16)]
    assert set(direct) == set(through) == {401}, (direct, through)


def test_usage_totals_add_up_across_both_instances(
    deployment: Deployment, transactional_db: Any, django_user_model: Any
) -> None:
    user = django_user_model.objects.create_user("usage")
    key_row, key = create_api_key(user, "k")
    plain = fire(deployment.proxy.url, key, 16)
    streamed = fire(deployment.proxy.url, key, 8, stream=True, stream_options={"include_usage": True})
    assert {r.status_code for r in plain + streamed} == {200}
    served = {deployment.instance_of(r.headers["x-gateway-worker"]) for r in plain + streamed}
    assert served == {"a", "b"}
    told = sum(r.json()["usage"]["total_tokens"] for r in plain)
    for r in streamed:
        last = [line for line in r.text.splitlines() if line.startswith("data: {")][-1]
        told += json.loads(last[6:])["usage"]["total_tokens"]

    rows = wait_for_rows(24, api_key=key_row)
    assert len(rows) == 24 and sum(row.total_tokens for row in rows) == told
    _, token = create_management_token(user)
    usage = httpx.get(
        deployment.proxy.url + "/api/usage/", params={"group_by": "key"}, headers={"Authorization": f"Token {token}"}
    ).json()["data"]
    assert [(u["key_id"], u["requests"], u["errors"], u["total_tokens"]) for u in usage] == [(key_row.pk, 24, 0, told)]
    page = httpx.get(
        deployment.proxy.url + "/api/logs/", params={"page_size": 10}, headers={"Authorization": f"Token {token}"}
    ).json()
    assert len(page["results"]) == 10 and page["next"].startswith(deployment.proxy.url + "/api/logs/")  # port kept


def test_streams_pass_the_proxy_unbuffered(
    deployment: Deployment, transactional_db: Any, django_user_model: Any
) -> None:
    ModelRoute.objects.create(model_name="slow-stream", provider="mock", options={"chunk_delay_ms": 300})
    _, key = create_api_key(django_user_model.objects.create_user("streamer"), "k")
    deadline = time.monotonic() + 10  # every worker of both instances reloads its route table
    while time.monotonic() < deadline:
        if all(chat(deployment.proxy.url, key, model="slow-stream", max_tokens=1).status_code == 200 for _ in range(8)):
            break
        time.sleep(0.2)
    body = {"model": "slow-stream", "stream": True, "messages": [{"role": "user", "content": "a b c d e f g h"}]}
    started = time.monotonic()
    arrivals = []
    with httpx.stream(
        "POST",
        deployment.proxy.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) >= 8
    assert arrivals[0] < 1.0 and arrivals[-1] > 2.0, arrivals  # the first chunk long before the last
    assert arrivals[len(arrivals) // 2] - arrivals[0] > 0.8, arrivals  # they trickled in as they were sent


def test_metrics_add_up_every_worker_of_an_instance(
    deployment: Deployment, transactional_db: Any, django_user_model: Any
) -> None:
    _, key = create_api_key(django_user_model.objects.create_user("metered"), "k")
    a = deployment.a.url
    before = httpx.get(a + "/metrics").text
    plain = fire(a, key, 20)
    streamed = fire(a, key, 6, stream=True)
    unknown = fire(a, key, 4, model="no-such-model")
    assert [r.status_code for r in plain + streamed] == [200] * 26 and {r.status_code for r in unknown} == {404}
    assert len({r.headers["x-gateway-worker"] for r in plain + streamed + unknown}) == 2, "both workers served"
    scraped = httpx.get(a + "/metrics")
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = scraped.text

    def delta(name: str, **labels: str) -> float:
        return metric_total(after, name, **labels) - metric_total(before, name, **labels)

    assert delta("gateway_requests_total") == 30
    assert delta("gateway_requests_total", status="200", model="mock-gpt-model", provider="mock") == 26
    assert delta("gateway_requests_total", status="404", model="(unknown)") == 4
    assert "no-such-model" not in after  # made-up names never become series
    assert delta("gen_ai_server_request_duration_seconds_count") == 30
    assert delta("gen_ai_server_time_to_first_token_seconds_count", gen_ai_request_model="mock-gpt-model") == 6
    told = sum(r.json()["usage"]["completion_tokens"] for r in plain)
    assert delta("gateway_tokens_total", type="completion") >= told
    assert delta("gateway_upstream_attempts_total", outcome="ok") == 26
    assert "# TYPE gateway_streams_in_flight gauge" in after and "# TYPE gateway_log_backlog_rows gauge" in after

    b = deployment.b.url
    refused = httpx.get(b + "/metrics")
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(b + "/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    allowed = httpx.get(b + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert allowed.status_code == 200 and "gateway_requests_total" in allowed.text


def test_every_line_is_json_and_none_holds_a_prompt_or_a_key(
    deployment: Deployment, transactional_db: Any, django_user_model: Any
) -> None:
    user = django_user_model.objects.create_user("logged")
    key_row, key = create_api_key(user, "k")
    sent = {}
    for i in range(6):
        rid = f"log-line-{i}-{key_row.pk}"
        body = {"model": "mock-gpt-model", "messages": [{"role": "user", "content": f"{PROMPT_MARKER} {i}"}]}
        if i % 2:
            body["stream"] = True
        r = httpx.post(
            deployment.proxy.url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}", "x-request-id": rid},
            timeout=30,
        )
        assert r.status_code == 200
        sent[rid] = body
    bad = chat(deployment.proxy.url, "sk-gw-not-a-real-key-" + "x" * 30)
    assert bad.status_code == 401
    time.sleep(0.5)  # the log threads write within milliseconds
    logs = (deployment.logs / "a.log", deployment.logs / "b.log")
    lines = [line for path in logs for line in path.read_text().splitlines()]
    parsed = []
    for line in lines:
        if line.strip():
            parsed.append(json.loads(line))  # every line, gunicorn's and uvicorn's too
    assert all({"time", "level", "logger", "message"} <= set(p) for p in parsed)
    requests = {p["request_id"]: p for p in parsed if p["logger"] == "gateway.request"}
    for rid, body in sent.items():
        line = requests[rid]
        assert line["key_prefix"] == key_row.prefix and line["user_id"] == user.pk
        assert (line["endpoint"], line["model"], line["provider"], line["status"]) == (
            "chat.completions",
            "mock-gpt-model",
            "mock",
            200,
        )
        assert line["stream"] is bool(body.get("stream")) and line["completion_tokens"] > 0
        assert line["latency_ms"] >= 0 and line["attempts"][0]["ok"] is True
        assert (line["ttft_ms"] is not None) is bool(body.get("stream"))
    text = "\n".join(lines)
    assert PROMPT_MARKER not in text
    assert key not in text and "sk-gw-not-a-real-key" not in text
