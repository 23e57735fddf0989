"""The production benchmark's data: a user and a key with RPM, TPM and budget limits, and the routes.

Run with the gateway's Python against the benchmark's throw-away database (DATABASE_URL):

    python bench/prod_fixtures.py --json-base URL --sse-base URL --paced-base URL --long-base URL

Prints the key. The limits are far above what a run can use, so every request is admitted, but
each one goes through the whole admission and settlement (rate buckets and budget reservations).
"""

from __future__ import annotations

import argparse
import os
import sys
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "compat_api.settings")


def log_rows(n: int) -> None:
    """Write `n` request-log rows through the gateway's own log writer (its hooks: roll-ups, key use)
    as fast as it takes them; print rows/s and the writer's CPU per row (what it takes from the
    event loop's share of the GIL in a worker)."""
    import time

    from django.contrib.auth import get_user_model

    from completions.app import make_log_writer
    from completions.models import APIKey
    from completions.recorder import RequestRecord

    key = APIKey.objects.get(user=get_user_model().objects.get(username="bench"), name="bench")
    writer = make_log_writer()
    models = ["bench-json", "bench-sse", "bench-paced", "bench-long"]
    records = [
        RequestRecord(
            request_id=f"req_logbench{i}",
            key_id=key.id,
            key_prefix=key.prefix,
            user_id=key.user_id,
            model=models[i % 4],
            provider="openai",
            upstream_model=models[i % 4],
            prompt_tokens=13,
            completion_tokens=9,
            input_price=Decimal("0.15"),
            output_price=Decimal("0.60"),
            latency_ms=3 + i % 40,
            finish_reason="stop",
            attempts=[{"route": "openai:bench-json#1", "ok": True, "ms": 2}],
        )
        for i in range(n)
    ]
    writer.submit(records[0])
    writer.flush(60)  # the thread, its connection and the insert plan exist before timing
    started, cpu = time.perf_counter(), time.process_time()
    for record in records[1:]:
        writer.submit(record)
    ok = writer.flush(600)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"{n - 1} rows in {elapsed:.2f} s: {(n - 1) / elapsed:.0f} rows/s, "
        f"{cpu * 1e6 / (n - 1):.0f} us of CPU per row (writer thread and submit), all written: {ok}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("json", "sse", "paced", "long"):
        parser.add_argument(f"--{name}-base")
    parser.add_argument("--log-rows", type=int, default=0, help="time the log writer instead")
    args = parser.parse_args()

    import django

    django.setup()
    if args.log_rows:
        log_rows(args.log_rows)
        return
    from django.contrib.auth import get_user_model

    from completions.keys import create_api_key
    from completions.models import ModelRoute
    from completions.routing import bump_version

    user = get_user_model().objects.create_user("bench")
    _, secret = create_api_key(
        user,
        "bench",
        rpm_limit=1_000_000_000,
        tpm_limit=2_000_000_000,
        token_budget=10_000_000_000_000,
        spend_budget=Decimal("1000000"),
    )
    for model, base in (
        ("bench-json", args.json_base),
        ("bench-sse", args.sse_base),
        ("bench-paced", args.paced_base),
        ("bench-long", args.long_base),
    ):
        ModelRoute.objects.create(
            model_name=model,
            provider="openai",
            upstream_model=model,
            base_url=base,
            input_price_per_million=Decimal("0.15"),
            output_price_per_million=Decimal("0.60"),
            options={"max_connections": 2000},
        )
    # The same routes for a key without limits: no Redis on its path (the benchmark's attribution).
    _, unlimited = create_api_key(user, "bench-unlimited")
    bump_version()
    print(f"unlimited {unlimited}")
    print(secret)


if __name__ == "__main__":
    main()
