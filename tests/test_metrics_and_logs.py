"""What /metrics counts and who may read it, and the shape of the log lines (in process; the
production command's own tests are in test_production_e2e.py)."""

from __future__ import annotations

import io
import json
import logging
import sys
from typing import Any

import httpx
import pytest

from completions import metrics
from completions.failover import CircuitBreakers
from completions.keys import create_api_key
from completions.logs import BackgroundStreamHandler, JsonFormatter, PlainFormatter, make_formatter
from completions.providers import Route
from tests.deployment import metric_total


def scrape(url: str, **headers: str) -> httpx.Response:
    return httpx.get(url + "/metrics", headers=headers, timeout=10)


def test_metrics_are_served_to_allowed_networks_or_with_the_token(gateway: Any, settings: Any) -> None:
    assert scrape(gateway.url).status_code == 200  # the loopback is allowed by default
    settings.GATEWAY_METRICS_NETWORKS = ["10.0.0.0/8"]
    refused = scrape(gateway.url)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    settings.GATEWAY_METRICS_TOKEN = "scrape-token-" + "x" * 20
    refused = scrape(gateway.url)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == 'Bearer realm="metrics"'
    assert scrape(gateway.url, Authorization="Bearer nope").status_code == 401
    ok = scrape(gateway.url, Authorization="Bearer " + settings.GATEWAY_METRICS_TOKEN)
    assert ok.status_code == 200 and "# TYPE gateway_requests_total counter" in ok.text
    # Like the probes, scrapes answer under any Host (Prometheus uses the machine's address).
    bearer = "Bearer " + settings.GATEWAY_METRICS_TOKEN
    assert scrape(gateway.url, Host="10.1.2.3:8000", Authorization=bearer).is_success


def test_limit_rejections_and_errors_are_counted(gateway: Any, user: Any) -> None:
    _, key = create_api_key(user, "one a minute", rpm_limit=1)
    before = metrics.render().decode()
    body = {"model": "mock-gpt-model", "messages": [{"role": "user", "content": "hi"}]}
    answers = [
        httpx.post(gateway.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
        for _ in range(3)
    ]
    assert [r.status_code for r in answers] == [200, 429, 429]
    after = metrics.render().decode()
    assert (
        metric_total(after, "gateway_limit_rejections_total", limit="requests")
        - metric_total(before, "gateway_limit_rejections_total", limit="requests")
        == 2
    )
    errors = metric_total(
        after, "gen_ai_server_request_duration_seconds_count", error_type="rate_limit_exceeded"
    ) - metric_total(before, "gen_ai_server_request_duration_seconds_count", error_type="rate_limit_exceeded")
    assert errors == 2


def test_breaker_state_is_a_gauge_per_route() -> None:
    route = Route(model_name="gauge-model", provider="mock", upstream_model="x", options={"breaker_failures": 2})
    breakers = CircuitBreakers()

    def value(name: str) -> float:
        return metric_total(metrics.render().decode(), name, route=route.label)

    opens = value("gateway_circuit_breaker_opens_total")
    breakers.failure(route)
    assert value("gateway_circuit_breaker_open") == 0
    breakers.failure(route)
    breakers.failure(route)  # still open: counted once
    assert value("gateway_circuit_breaker_open") == 1
    assert value("gateway_circuit_breaker_opens_total") == opens + 1
    breakers.success(route)
    assert value("gateway_circuit_breaker_open") == 0


def record(message: str, level: int = logging.WARNING, **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("completions.test", level, __file__, 1, message, (), None)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_redact_credentials_and_keep_tracebacks_on_one_line() -> None:
    try:
        raise ValueError("upstream said: bad key sk-abcdefghijklmnopqrstuvwx")
    except ValueError:
        rec = record("calling with Bearer abcdefgh12345678 failed")
        rec.exc_info = sys.exc_info()
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "warning" and parsed["logger"] == "completions.test"
    assert parsed["message"] == "calling with Bearer [redacted] failed"
    assert "ValueError" in parsed["exception"] and "sk-abc" not in parsed["exception"]
    assert parsed["time"].endswith("Z") and isinstance(parsed["pid"], int)
    fields = JsonFormatter().format(record("request", logging.INFO, fields={"status": 200, "model": "m"}))
    assert json.loads(fields) | {"time": 0, "pid": 0} == {
        "time": 0,
        "pid": 0,
        "level": "info",
        "logger": "completions.test",
        "message": "request",
        "status": 200,
        "model": "m",
    }
    plain = PlainFormatter().format(record("request", logging.INFO, fields={"status": 200, "model": "m", "x": ""}))
    assert plain.endswith("INFO completions.test request status=200 model=m")


def test_log_format_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_FORMAT", "plain")
    assert isinstance(make_formatter(), PlainFormatter)
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        make_formatter()


def test_the_handler_writes_every_line_in_order_from_its_thread() -> None:
    out = io.StringIO()
    handler = BackgroundStreamHandler(stream=out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("completions.test.handler")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for i in range(500):
            logger.warning("line %d", i)
        handler.flush()
        assert [json.loads(line)["message"] for line in out.getvalue().splitlines()] == [
            f"line {i}" for i in range(500)
        ]
    finally:
        logger.removeHandler(handler)
        handler.close()


def test_the_request_line_is_the_same_with_or_without_the_direct_path() -> None:
    """With one background handler (as deployed) the line skips the logging module; with any other
    setup (a second handler, a filter) it goes through it. Both write the same line."""
    from types import SimpleNamespace

    from completions import logs
    from completions.exchange import Exchange

    ex = Exchange(SimpleNamespace(inflight=0), "req_same_line", "chat.completions")  # type: ignore[arg-type]
    ex.record.key_prefix, ex.record.model, ex.record.provider, ex.record.prompt_tokens = "sk-gw-abc", "m", "mock", 5
    ex.record.attempts = [{"route": "mock:m", "provider": "mock", "ok": True, "ms": 1, "message": "upstream words"}]
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    out = io.StringIO()
    handler = BackgroundStreamHandler(stream=out)
    handler.setFormatter(JsonFormatter())
    try:
        root.handlers, root.level = [handler], logging.INFO
        assert logs._sole_handler() is handler
        logs.request_line(ex)
        second = logging.NullHandler()
        root.addHandler(second)
        assert logs._sole_handler() is None
        logs.request_line(ex)
        handler.flush()
    finally:
        root.handlers, root.level = saved
        handler.close()
    direct, through = (json.loads(line) for line in out.getvalue().splitlines())
    assert direct.pop("time") and through.pop("time")
    assert direct == through and direct["request_id"] == "req_same_line" and direct["logger"] == "gateway.request"
    assert direct["attempts"] == [{"route": "mock:m", "ok": True, "ms": 1}]  # never an attempt's message
