"""Fixtures of the Messages API tests: the `anthropic` SDK pointed at the gateway."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest


@pytest.fixture
def claude(gateway: Any, api_key: str) -> anthropic.Anthropic:
    """The official sync `anthropic` client, pointed at the gateway (base URL without /v1, as the SDK wants)."""
    return anthropic.Anthropic(api_key=api_key, base_url=gateway.url, max_retries=0, timeout=30)


@pytest.fixture
def async_claude(gateway: Any, api_key: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key=api_key, base_url=gateway.url, max_retries=0, timeout=30)


@pytest.fixture
def raw_messages(gateway: Any, api_key: str) -> Iterator[httpx.Client]:
    """Plain HTTP with Anthropic's headers (`x-api-key`, `anthropic-version`), for exact wire checks."""
    headers = {"x-api-key": api_key, "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as c:
        yield c
