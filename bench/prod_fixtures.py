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


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("json", "sse", "paced", "long"):
        parser.add_argument(f"--{name}-base", required=True)
    args = parser.parse_args()

    import django

    django.setup()
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
    bump_version()
    print(secret)


if __name__ == "__main__":
    main()
