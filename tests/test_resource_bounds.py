"""One tenant's request can't exhaust a worker: sizes are bounded before any work is done.

The gateway runs as its own uvicorn process under an address-space cap, so a
request that would make it allocate without bound fails the test (a MemoryError
is a 500, and the process would die) instead of eating the machine's memory.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from completions.keys import create_api_key
from tests.processes import GatewayProcess

MEMORY_CAP = 3 * 1024**3  # bytes of address space for the gateway process


@pytest.fixture
def capped_gateway(transactional_db: Any, django_user_model: Any) -> Any:
    user = django_user_model.objects.create_user("bounded")
    _, secret = create_api_key(user, "bounded key")
    with GatewayProcess(memory_cap_bytes=MEMORY_CAP) as gateway:
        gateway.secret = secret  # type: ignore[attr-defined]
        yield gateway


def embed(gateway: Any, **body: Any) -> httpx.Response:
    payload = {"model": "mock-gpt-model", "input": "x", **body}
    headers = {"Authorization": f"Bearer {gateway.secret}"}
    return httpx.post(gateway.url + "/v1/embeddings", json=payload, headers=headers, timeout=60)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"dimensions": 1_000_000_000}, "dimensions"),  # grew a worker to 23 GB before
        ({"input": ["x"] * 2048, "dimensions": 100_000}, "dimensions"),  # was a 500 (MemoryError)
        ({"dimensions": 3_000_000}, "dimensions"),  # blocked the event loop for 0.7 s
        ({"input": ["x"] * 2048, "dimensions": 3072}, "input"),  # 6.3 M values in one answer
    ],
)
def test_oversized_embeddings_are_a_400_naming_the_parameter(capped_gateway: Any, body: Any, param: str) -> None:
    response = embed(capped_gateway, **body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert capped_gateway.alive()
    assert embed(capped_gateway).status_code == 200  # and the worker goes on serving


def test_the_largest_allowed_embeddings_request_is_answered(capped_gateway: Any) -> None:
    response = embed(capped_gateway, input=[f"text {i}" for i in range(341)], dimensions=3072)
    assert response.status_code == 200
    data = response.json()["data"]
    assert len(data) == 341 and {len(d["embedding"]) for d in data} == {3072}
    assert capped_gateway.alive()


def chat(gateway: Any, **body: Any) -> httpx.Response:
    payload = {"model": "mock-gpt-model", **body}
    headers = {"Authorization": f"Bearer {gateway.secret}"}
    return httpx.post(gateway.url + "/v1/chat/completions", json=payload, headers=headers, timeout=60)


def test_the_mock_bounds_n_times_its_output(capped_gateway: Any) -> None:
    words = " ".join(f"w{i}" for i in range(300))
    response = chat(capped_gateway, messages=[{"role": "user", "content": words}], n=128, stream=True)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "n"
    fits = chat(capped_gateway, messages=[{"role": "user", "content": words}], n=100)
    assert fits.status_code == 200 and len(fits.json()["choices"]) == 100


def test_the_mock_stops_at_its_output_limit_like_a_model(capped_gateway: Any) -> None:
    words = " ".join(f"w{i}" for i in range(5000))
    answer = chat(capped_gateway, messages=[{"role": "user", "content": words}]).json()
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 4096
