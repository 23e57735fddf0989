"""Route changes reach every worker without Redis: `make run`, then `manage.py load_routes`.

Before, without Redis a running server answered 404 for the new models (64 of 120 requests)
until it was restarted: the version it watched lived in a per-process cache.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings

from completions.keys import create_api_key
from tests.processes import ROOT, GatewayProcess, database_url

ROUTES = """
routes:
  - {model: fresh-model, provider: mock, upstream_model: fresh-upstream}
"""


def test_load_routes_reaches_both_workers_without_redis(
    transactional_db: Any, django_user_model: Any, tmp_path: Path
) -> None:
    _, secret = create_api_key(django_user_model.objects.create_user("router"), "k")
    env = {"REDIS_URL": "", "GATEWAY_DEBUG_HEADERS": "true"}
    body = {"model": "fresh-model", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {secret}"}
    with GatewayProcess("gunicorn", workers=2, env=env) as gateway, httpx.Client(base_url=gateway.url) as http:
        # Warm both workers' tables first (each worker answers on a connection of its own).
        for _ in range(20):
            assert httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=headers).status_code == 404
        routes = tmp_path / "routes.yaml"
        routes.write_text(ROUTES)
        subprocess.run(
            [sys.executable, "manage.py", "load_routes", str(routes)],
            cwd=ROOT,
            env={**gateway.env, "DATABASE_URL": database_url()},
            check=True,
            capture_output=True,
        )
        loaded = time.monotonic()
        served_by: set[str] = set()
        answers: list[int] = []
        deadline = loaded + settings.GATEWAY_ROUTE_CHECK_SECONDS + 3
        while time.monotonic() < deadline and not (len(served_by) == 2 and answers[-20:] == [200] * 20):
            r = httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=headers)  # a new connection
            answers.append(r.status_code)
            if r.status_code == 200:
                served_by.add(r.headers["x-gateway-worker"])
            time.sleep(0.02)
        took = time.monotonic() - loaded
        assert served_by and len(served_by) == 2, f"workers serving the new model: {served_by}"
        assert answers[-20:] == [200] * 20
        assert took < settings.GATEWAY_ROUTE_CHECK_SECONDS + 3
        assert http.get("/healthz").status_code == 200
