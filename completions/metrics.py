"""Prometheus metrics, added up over every gunicorn worker.

Under gunicorn, `gunicorn.conf.py` sets PROMETHEUS_MULTIPROC_DIR before any worker starts:
prometheus-client then keeps each worker's values in memory-mapped files in that directory,
and `/metrics` (any worker) reads them all and adds them up. In a single process (`make run`,
the in-process test server) the values live in process. Observing a request is a handful of
dictionary lookups and stores into mapped memory: no system call, nothing that waits
(README, Operations, has the measured cost; `bench/telemetry_bench.py` measures it).

`observe(exchange)` is called once per request, from `Exchange.close()`; the circuit
breakers, the request-log writer and the stream relay report their own events.

Names follow Prometheus conventions (`_total`, `_seconds`) and, where one exists, the
OpenTelemetry GenAI semantic conventions, translated as OpenTelemetry's Prometheus exporter
translates them: `gen_ai.server.request.duration` is `gen_ai_server_request_duration_seconds`
with the labels `gen_ai_operation_name`, `gen_ai_request_model`, `gen_ai_provider_name`
and `error_type`. The `model` label is the model a client asked for only when the route
table serves it; any other name is counted under `(unknown)`, so tenants can't grow the
number of series by making names up.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

# An empty PROMETHEUS_MULTIPROC_DIR (a blank line in .env) means unset: prometheus-client would
# otherwise keep its files in the working directory.
if "PROMETHEUS_MULTIPROC_DIR" in os.environ and not os.environ["PROMETHEUS_MULTIPROC_DIR"].strip():
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as _multiprocess
from prometheus_client import values as _values

if TYPE_CHECKING:
    from .exchange import Exchange

# Multiprocess values ask for the process id on every write, to notice a fork: a system call each
# (os.getpid is not cached by the C library). The id is kept here instead, and renewed in a
# forked child, which is all that check needs.
_pid = os.getpid()


def _renew_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_renew_pid)
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _values.ValueClass = _values.MultiProcessValue(process_identifier=lambda: _pid)

M = TypeVar("M", Counter, Gauge, Histogram)


def children(metric: M) -> Callable[..., M]:
    """`metric.labels` with the children kept by label values: prometheus-client's `labels()`
    validates and converts its arguments on every call, which costs more than the write itself."""
    cache: dict[tuple[str, ...], M] = {}

    def child(*values: str) -> M:
        found = cache.get(values)
        if found is None:
            found = cache[values] = metric.labels(*values)
        return found

    return child


UNKNOWN_MODEL = "(unknown)"
# OpenTelemetry's advised buckets for gen_ai.server.request.duration and time_to_first_token.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# gen_ai.operation.name for each of the gateway's endpoints (others keep their endpoint name).
OPERATIONS = {"chat.completions": "chat", "responses": "chat", "embeddings": "embeddings"}
GENAI = ("gen_ai_operation_name", "gen_ai_request_model", "gen_ai_provider_name")

REQUESTS = Counter(
    "gateway_requests",
    "Requests answered, by endpoint, model, provider and HTTP status.",
    ["endpoint", "model", "provider", "status"],
)
DURATION = Histogram(
    "gen_ai_server_request_duration_seconds",
    "Time from the request's arrival to its last byte (OpenTelemetry gen_ai.server.request.duration).",
    [*GENAI, "error_type"],
    buckets=DURATION_BUCKETS,
)
TTFT = Histogram(
    "gen_ai_server_time_to_first_token_seconds",
    "Time to a stream's first content chunk (OpenTelemetry gen_ai.server.time_to_first_token).",
    GENAI,
    buckets=TTFT_BUCKETS,
)
TOKENS = Counter(
    "gateway_tokens",
    "Tokens used, by model, provider and type (prompt or completion).",
    ["model", "provider", "type"],
)
COST = Counter("gateway_cost_usd", "Cost in US dollars at the routes' prices.", ["model", "provider"])
ATTEMPTS = Counter(
    "gateway_upstream_attempts",
    "Upstream attempts by route and outcome (ok, error, or skipped: circuit open, unsupported parameters).",
    ["route", "provider", "outcome"],
)
RETRIES = Counter("gateway_upstream_retries", "Attempts that retried the route of the attempt before.", ["route"])
UPSTREAM_ERRORS = Counter(
    "gateway_upstream_errors", "Failed upstream attempts by route, status and error code.", ["route", "status", "error"]
)
LIMIT_REJECTIONS = Counter(
    "gateway_limit_rejections",
    "Requests refused by the gateway's own limits: requests or tokens per minute, or a budget.",
    ["limit"],
)
STREAMS = Gauge("gateway_streams_in_flight", "Streams being relayed now.", multiprocess_mode="livesum")
BREAKER_OPEN = Gauge(
    "gateway_circuit_breaker_open",
    "Worker processes in which the route's circuit breaker is open or half-open (0: closed everywhere).",
    ["route"],
    multiprocess_mode="livesum",
)
BREAKER_OPENS = Counter("gateway_circuit_breaker_opens", "Times a route's circuit breaker opened.", ["route"])
LOG_BACKLOG = Gauge("gateway_log_backlog_rows", "Request-log rows waiting to be written.", multiprocess_mode="livesum")
LOG_WRITTEN = Counter("gateway_log_rows_written", "Request-log rows written to the database.")
LOG_SET_ASIDE = Counter("gateway_log_rows_set_aside", "Request-log rows the database refused, kept in SetAsideLogRow.")
LOG_DROPPED = Counter("gateway_log_rows_dropped", "Request-log rows dropped because the backlog was over its bound.")


_requests, _tokens, _cost = children(REQUESTS), children(TOKENS), children(COST)
_duration, _ttft = children(DURATION), children(TTFT)
_attempts, _retries = children(ATTEMPTS), children(RETRIES)
_upstream_errors, _rejections = children(UPSTREAM_ERRORS), children(LIMIT_REJECTIONS)


def observe(exchange: Exchange) -> None:
    """Count one finished request (called once, from `Exchange.close()`)."""
    r = exchange.record
    model = r.model if exchange.resolved else UNKNOWN_MODEL
    provider = r.provider
    _requests(r.endpoint, model, provider, str(r.status_code)).inc()
    operation = OPERATIONS.get(r.endpoint, r.endpoint)
    error_type = (r.error_code or r.error_type) if r.is_error else ""
    _duration(operation, model, provider, error_type).observe(time.perf_counter() - r.started)
    if r.ttft_ms is not None:
        _ttft(operation, model, provider).observe(r.ttft_ms / 1000)
    if r.prompt_tokens:
        _tokens(model, provider, "prompt").inc(r.prompt_tokens)
    if r.completion_tokens:
        _tokens(model, provider, "completion").inc(r.completion_tokens)
    if provider and (r.input_price or r.output_price) and (r.prompt_tokens or r.completion_tokens):
        _cost(model, provider).inc(r.cost_nanos / 1e9)
    if exchange.refused:
        _rejections(exchange.refused).inc()
    previous = None
    for a in r.attempts:
        route = a["route"]
        if a.get("skipped"):
            _attempts(route, a["provider"], "skipped").inc()
            continue
        if a["ok"]:
            _attempts(route, a["provider"], "ok").inc()
        else:
            _attempts(route, a["provider"], "error").inc()
            _upstream_errors(route, str(a.get("status", "")), a.get("error") or "").inc()
        if route == previous:
            _retries(route).inc()
        previous = route


def breaker_opened(route: str) -> None:
    BREAKER_OPENS.labels(route).inc()
    BREAKER_OPEN.labels(route).set(1)


def breaker_closed(route: str) -> None:
    BREAKER_OPEN.labels(route).set(0)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def render() -> bytes:
    """The metrics in Prometheus' text format: every worker's, added up (this reads their files)."""
    registry: Any
    if multiprocess_dir():
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY as registry
    return generate_latest(registry)


@lru_cache(maxsize=8)
def _networks(spec: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in spec)


def address_allowed(address: str, networks: tuple[str, ...]) -> bool:
    """Whether `address` (the connection's peer) is inside one of `networks`."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in _networks(networks))
