"""The roll-ups and the request log always agree: thousands of requests, some failing, some cut short."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from django.conf import settings

from completions.app import current
from completions.keys import create_api_key
from completions.models import NANOS, LatencyDaily, ModelRoute, RequestLog, UsageDaily
from completions.recorder import LogWriter, RequestRecord
from completions.usage import UNKNOWN_MODEL, rollup

FIELDS = ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "cost_nanos", "latency_ms_total")


def rolled_up_as(model: str) -> str:
    """The roll-up bucket of a logged model: its own if a route serves it, else UNKNOWN_MODEL."""
    routed = {settings.GATEWAY_MOCK_MODEL, *ModelRoute.objects.values_list("model_name", flat=True)}
    return model if model in routed else UNKNOWN_MODEL


def log_totals() -> dict[tuple[Any, ...], list[int]]:
    """The roll-up computed the slow way: a scan of the whole log."""
    totals: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * len(FIELDS))
    for row in RequestLog.objects.all().iterator():
        t = totals[(row.created_at.astimezone(UTC).date(), row.api_key_id or 0, rolled_up_as(row.model))]
        for i, value in enumerate(
            (
                1,
                int(row.status_code >= 400),
                row.prompt_tokens,
                row.completion_tokens,
                row.total_tokens,
                int(row.cost * NANOS),
                row.latency_ms,
            )
        ):
            t[i] += value
    return dict(totals)


def rollup_totals() -> dict[tuple[Any, ...], list[int]]:
    return {(u.day, u.key_id, u.model): [getattr(u, f) for f in FIELDS] for u in UsageDaily.objects.all()}


def assert_agree() -> None:
    assert current().log.flush(60)
    assert rollup_totals() == log_totals()
    per_model: dict[str, int] = defaultdict(int)
    for model in RequestLog.objects.values_list("model", flat=True):
        per_model[rolled_up_as(model)] += 1
    histogram: dict[str, int] = defaultdict(int)
    for entry in LatencyDaily.objects.all():
        histogram[entry.model] += entry.count
    assert dict(histogram) == dict(per_model)


@pytest.mark.slow
@pytest.mark.timeout(300)  # 2,024 requests: over a minute on a loaded 2-core machine
def test_rollups_match_the_log_after_thousands_of_mixed_requests(gateway: Any, django_user_model: Any) -> None:
    ModelRoute.objects.create(
        model_name="priced",
        provider="mock",
        upstream_model="priced",
        input_price_per_million=Decimal("0.37"),
        output_price_per_million=Decimal("1.11"),
    )
    ModelRoute.objects.create(model_name="slow", provider="mock", upstream_model="slow", options={"chunk_delay_ms": 40})
    users = [django_user_model.objects.create_user(f"acct-{i}") for i in range(2)]
    secrets = [
        create_api_key(users[0], "a")[1],
        create_api_key(users[1], "b")[1],
        create_api_key(users[1], "limited", rpm_limit=25)[1],
    ]
    rng = random.Random(42)
    url = gateway.url + "/v1/chat/completions"

    def request(i: int) -> int:
        kind = rng.choice(["ok"] * 10 + ["stream"] * 3 + ["bad"] * 2 + ["unknown", "badkey", "limited"])
        secret = secrets[i % 2]
        body: dict[str, Any] = {
            "model": rng.choice(["mock-gpt-model", "priced"]),
            "messages": [{"role": "user", "content": " ".join(["w"] * rng.randint(1, 40))}],
        }
        if kind == "stream":
            body["stream"] = True
        elif kind == "bad":
            body["temperature"] = 5
        elif kind == "unknown":
            body["model"] = "no-such-model"
        elif kind == "badkey":
            secret = "sk-gw-not-a-real-key-" + str(i)
        elif kind == "limited":
            secret = secrets[2]
        with httpx.Client(timeout=30) as http:
            return http.post(url, json=body, headers={"Authorization": f"Bearer {secret}"}).status_code

    def cut_short(i: int) -> None:
        body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": " ".join(["x"] * 50)}]}
        with (
            httpx.Client(timeout=30) as http,
            http.stream("POST", url, json=body, headers={"Authorization": f"Bearer {secrets[i % 2]}"}) as r,
        ):
            next(r.iter_lines())

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(request, range(2000)))
        list(pool.map(cut_short, range(24)))
    assert {200, 400, 401, 404, 429} <= set(statuses)
    deadline = time.monotonic() + 20
    while RequestLog.objects.filter(client_disconnected=True).count() < 24 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert RequestLog.objects.count() == 2024
    assert RequestLog.objects.filter(client_disconnected=True).count() == 24
    assert_agree()
    cost = sum((r.cost for r in RequestLog.objects.filter(model="priced")), Decimal(0))
    assert cost > 0 and cost == sum((u.cost for u in UsageDaily.objects.filter(model="priced")), Decimal(0))


def test_concurrent_writers_keep_rollups_exact(transactional_db: Any) -> None:
    """Several processes' writers upserting the same roll-up rows at once lose no increment."""
    for name in ("m1", "m2"):
        ModelRoute.objects.create(model_name=name, provider="mock")
    writers = [LogWriter(batch_size=50) for _ in range(3)]
    for w in writers:
        w.hooks.append(rollup)
    day = datetime(2026, 3, 1, 12, tzinfo=UTC)

    def produce(w: LogWriter, seed: int) -> None:
        rng = random.Random(seed)
        for i in range(400):
            w.submit(
                RequestRecord(
                    request_id=f"w{seed}-{i}",
                    created_at=day + timedelta(hours=rng.choice([0, 13])),
                    key_id=None,
                    model=rng.choice(["m1", "m2"]),
                    status_code=rng.choice([200, 200, 500]),
                    prompt_tokens=rng.randint(0, 50),
                    completion_tokens=rng.randint(0, 50),
                    latency_ms=rng.randint(1, 3000),
                    input_price=Decimal("3"),
                    output_price=Decimal("15"),
                )
            )

    threads = [threading.Thread(target=produce, args=(w, i)) for i, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in writers:
        assert w.flush(60)
        w.close()
    assert RequestLog.objects.count() == 1200
    assert_agree()
