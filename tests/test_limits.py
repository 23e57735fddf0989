"""Per-key limits: requests and tokens per minute, budgets, allowed models, OpenAI's headers and codes."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import openai
import pytest
from django.conf import settings

from completions import limits as lim
from completions.caller import Caller, Limits, Scope, limits_from
from completions.keys import create_api_key
from completions.models import ModelRoute, UserLimits
from tests.conftest import log_rows

HI = [{"role": "user", "content": "hello there"}]


def limiter_kinds() -> list[Any]:
    kinds = [pytest.param("local", id="in-process")]
    kinds.append(
        pytest.param("redis", id="redis", marks=pytest.mark.skipif(not settings.REDIS_URL, reason="REDIS_URL not set"))
    )
    return kinds


def make(kind: str) -> lim.Limiter:
    return (
        lim.LocalLimiter()
        if kind == "local"
        else lim.RedisLimiter(settings.REDIS_URL, settings.GATEWAY_REDIS_PREFIX + "-unit")
    )


def key_scope(key_id: int, limits: Limits) -> list[Scope]:
    return [Scope("key", key_id, limits)]


@pytest.mark.parametrize("kind", limiter_kinds())
def test_request_bucket_refuses_the_request_over_the_limit(kind: str) -> None:
    limiter = make(kind)
    limits = Limits(rpm=3)
    key_id = int(time.time() * 1000) % 10_000_000

    async def run() -> list[Any]:
        out = []
        for _ in range(4):
            try:
                out.append(await limiter.admit(key_scope(key_id, limits), 10, 0))
            except lim.RateLimited as exc:
                out.append(exc)
        return out

    *admitted, refused = asyncio.run(run())
    assert [a.headers["x-ratelimit-remaining-requests"] for a in admitted] == ["2", "1", "0"]
    assert all(a.headers["x-ratelimit-limit-requests"] == "3" for a in admitted)
    assert admitted[-1].headers["x-ratelimit-reset-requests"] in ("1m0s", "59s", "1m1s")
    assert isinstance(refused, lim.RateLimited) and refused.code == "rate_limit_exceeded" and refused.type == "requests"
    assert 15 <= int(refused.headers["retry-after"]) <= 21  # one request refills in 20 s


@pytest.mark.parametrize("kind", limiter_kinds())
def test_token_bucket_and_too_large_requests(kind: str) -> None:
    limiter = make(kind)
    limits = Limits(tpm=100)
    key_id = int(time.time() * 1000) % 10_000_000 + 1

    async def run() -> tuple[Any, ...]:
        with pytest.raises(lim.RateLimited) as too_large:
            await limiter.admit(key_scope(key_id, limits), 101, 0)
        first = await limiter.admit(key_scope(key_id, limits), 60, 0)
        await limiter.settle(first, 90, 0)  # really used more than estimated: 10 left
        with pytest.raises(lim.RateLimited) as over:
            await limiter.admit(key_scope(key_id, limits), 20, 0)
        return too_large.value, first, over.value

    too_large, first, over = asyncio.run(run())
    assert "Request too large" in too_large.message and too_large.headers["x-should-retry"] == "false"
    assert first.headers["x-ratelimit-remaining-tokens"] == "40"
    assert over.type == "tokens" and over.headers["x-ratelimit-limit-tokens"] == "100"
    assert int(over.headers["x-ratelimit-remaining-tokens"]) <= 10


@pytest.mark.parametrize("kind", limiter_kinds())
def test_budget_reservations_bound_concurrent_spend(kind: str, transactional_db: Any, user: Any) -> None:
    """Admission counts in-flight reservations: with worst-case estimates, no overspend at all."""
    key, _ = create_api_key(user, "budget")
    limiter = make(kind)
    limits = Limits(spend_budget_nanos=1000, token_budget=None)

    async def run() -> tuple[list[lim.Admission], int]:
        admitted, refused = [], 0
        for _ in range(10):  # ten requests in flight at once, each worst case 300
            try:
                admitted.append(await limiter.admit(key_scope(key.pk, limits), 10, 300))
            except lim.QuotaExceeded as exc:
                assert exc.code == "insufficient_quota" and exc.headers["x-should-retry"] == "false"
                refused += 1
        for a in admitted:
            await limiter.settle(a, 10, 250)  # each really cost 250
        return admitted, refused

    admitted, refused = asyncio.run(run())
    assert len(admitted) == 3 and refused == 7  # 3 x 300 <= 1000 < 4 x 300

    async def after() -> Any:
        ok = await limiter.admit(key_scope(key.pk, limits), 10, 250)  # 750 spent + 250 = 1000: still fits
        with pytest.raises(lim.QuotaExceeded):
            await limiter.admit(key_scope(key.pk, limits), 10, 1)
        return ok

    asyncio.run(after())


@pytest.mark.parametrize("kind", limiter_kinds())
def test_a_users_limits_hold_across_keys_and_a_refusal_takes_from_no_scope(kind: str) -> None:
    limiter = make(kind)
    base = int(time.time() * 1000) % 10_000_000 + 5
    user = Scope("user", base, Limits(rpm=2))
    key_a, key_b = Scope("key", base, Limits(rpm=5)), Scope("key", base + 1, Limits(tpm=1000))

    async def run() -> tuple[Any, ...]:
        first = await limiter.admit([key_a, user], 10, 0)
        second = await limiter.admit([key_b, user], 10, 0)
        with pytest.raises(lim.RateLimited) as third:  # the user's 2 per minute, whichever key
            await limiter.admit([key_a, user], 10, 0)
        alone = await limiter.admit([key_a], 10, 0)  # the refusal took nothing from key_a's bucket
        return first, second, third.value, alone

    first, second, third, alone = asyncio.run(run())
    assert first.headers["x-ratelimit-limit-requests"] == "2"  # the scope with the least left
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert "all of its API keys" in third.message and third.type == "requests"
    assert alone.headers["x-ratelimit-remaining-requests"] == "3"  # 5 - first - this one


def test_limits_from_rows_and_the_callers_scopes() -> None:
    key_row = {"rpm_limit": None, "tpm_limit": 500, "allowed_models": ["a", "b"], "spend_budget": None}
    user_row = {"rpm_limit": 60, "allowed_models": ["a"], "spend_budget": Decimal("1.5"), "budget_period": "total"}
    key, user = limits_from(key_row), limits_from(user_row)
    assert key == Limits(tpm=500, allowed_models=("a", "b"))
    assert user == Limits(rpm=60, allowed_models=("a",), spend_budget_nanos=1_500_000_000, period="total")
    caller = Caller(7, 3, "sk-gw-x", "k", None, False, key_limits=key, user_limits=user)
    assert caller.allows("a") and not caller.allows("b") and caller.limited
    assert [s.name for s in caller.scopes] == ["key:7", "user:3"]
    assert limits_from(None) == Limits() and not Caller(1, 1, "p", "n", None, False).scopes
    assert lim.duration(0.02) == "20ms" and lim.duration(360) == "6m0s" and lim.duration(1.2) == "2s"


# ---- through the gateway -------------------------------------------------------------------------


def sdk(gateway: Any, secret: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=secret, base_url=gateway.url + "/v1", max_retries=0)


def test_rpm_limit_headers_and_429(gateway: Any, user: Any) -> None:
    _, secret = create_api_key(user, "rpm", rpm_limit=2)
    client = sdk(gateway, secret)
    first = client.chat.completions.with_raw_response.create(model="mock-gpt-model", messages=HI)
    second = client.chat.completions.with_raw_response.create(model="mock-gpt-model", messages=HI)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert [first.headers["x-ratelimit-remaining-requests"], second.headers["x-ratelimit-remaining-requests"]] == [
        "1",
        "0",
    ]
    assert "x-ratelimit-limit-tokens" not in first.headers  # no token limit on this key
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="mock-gpt-model", messages=HI)
    assert exc.value.body["code"] == "rate_limit_exceeded"
    assert int(exc.value.response.headers["retry-after"]) >= 1
    assert exc.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    rows = log_rows(status_code=429)
    assert len(rows) == 1 and rows[0].error_code == "rate_limit_exceeded"


def test_tpm_limit_counts_real_usage(gateway: Any, user: Any) -> None:
    _, secret = create_api_key(user, "tpm", tpm_limit=60)
    client = sdk(gateway, secret)
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="mock-gpt-model", messages=HI, max_tokens=100)
    assert "too large" in exc.value.body["message"]
    words = [{"role": "user", "content": " ".join(["w"] * 12)}]  # 18 prompt + 12 completion tokens
    r = client.chat.completions.with_raw_response.create(model="mock-gpt-model", messages=words)
    assert r.parse().usage.total_tokens == 30
    time.sleep(0.2)  # settlement happens after the answer
    with pytest.raises(openai.RateLimitError) as exc:
        for _ in range(3):
            client.chat.completions.create(model="mock-gpt-model", messages=words)
    assert exc.value.body["type"] == "tokens"


def test_spend_budget_is_insufficient_quota(gateway: Any, user: Any) -> None:
    ModelRoute.objects.create(
        model_name="priced",
        provider="mock",
        upstream_model="priced",
        input_price_per_million=Decimal("1000"),
        output_price_per_million=Decimal("2000"),
    )
    key, secret = create_api_key(user, "budget", spend_budget=Decimal("0.05"))
    client = sdk(gateway, secret)
    # 8 prompt + 2 completion tokens = 0.008 + 0.004 = 0.012 USD each, reserved as 0.008 + 2 x 0.002.
    served = 0
    with pytest.raises(openai.RateLimitError) as exc:
        for _ in range(10):
            client.chat.completions.create(model="priced", messages=HI, max_tokens=2)
            served += 1
            time.sleep(0.05)
    assert served == 4  # 0.048 spent; a fifth (worst case 0.012) would pass 0.05
    assert exc.value.body["code"] == "insufficient_quota" and exc.value.body["type"] == "insufficient_quota"
    assert exc.value.response.headers["x-should-retry"] == "false"
    spent = sum(r.cost for r in log_rows(api_key=key, status_code=200))
    assert spent == Decimal("0.048")


def test_allowed_models_and_user_limits(gateway: Any, user: Any, settings: Any) -> None:
    """Staff's limits on a user bind every key of the user; a key's own limits only narrow them."""
    settings.GATEWAY_KEY_CACHE_SECONDS = 0.2
    ModelRoute.objects.create(model_name="other-model", provider="mock", upstream_model="o")
    UserLimits.objects.create(user=user, allowed_models=["mock-gpt-model"], rpm_limit=1)
    _, plain = create_api_key(user, "plain")
    _, wider = create_api_key(user, "asks for more", allowed_models=["other-model"], rpm_limit=5)
    client = sdk(gateway, plain)
    assert [m.id for m in client.models.list().data] == ["mock-gpt-model"]
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="other-model", messages=HI)
    assert exc.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("other-model")
    r = client.chat.completions.with_raw_response.create(model="mock-gpt-model", messages=HI)
    assert r.headers["x-ratelimit-limit-requests"] == "1"
    other = sdk(gateway, wider)
    assert other.models.list().data == []  # its own list and the user's have nothing in common
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.create(model="other-model", messages=HI)
    # Changing the user's limits reaches the cached keys.
    limits = UserLimits.objects.get(user=user)
    limits.allowed_models = []
    limits.rpm_limit = None
    limits.save()
    time.sleep(0.3)
    client.models.list()  # may still be answered from the entry being re-read
    time.sleep(0.1)
    assert {"mock-gpt-model", "other-model"} <= {m.id for m in client.models.list().data}
    r = other.chat.completions.with_raw_response.create(model="other-model", messages=HI)
    assert r.headers["x-ratelimit-limit-requests"] == "5"


def test_a_users_budget_and_rate_limit_hold_across_new_keys(gateway: Any, user: Any) -> None:
    """A user whose budget is spent can't go on by making another key (it spent 60 tokens on key 1,
    then made key 2 and went on, before); nor can a rate limit be multiplied by keys."""
    UserLimits.objects.create(user=user, token_budget=60, budget_period="total")
    _, first = create_api_key(user, "first")
    words = [{"role": "user", "content": " ".join(["w"] * 12)}]  # 18 prompt + 12 completion tokens
    client = sdk(gateway, first)
    client.chat.completions.create(model="mock-gpt-model", messages=words)
    client.chat.completions.create(model="mock-gpt-model", messages=words)
    time.sleep(0.2)  # settlement happens after the answer
    with pytest.raises(openai.RateLimitError) as spent:
        client.chat.completions.create(model="mock-gpt-model", messages=words)
    assert spent.value.body["code"] == "insufficient_quota"
    _, second = create_api_key(user, "second")
    with pytest.raises(openai.RateLimitError) as again:
        sdk(gateway, second).chat.completions.create(model="mock-gpt-model", messages=words)
    assert again.value.body["code"] == "insufficient_quota" and "all of its API keys" in again.value.body["message"]

    other_user = type(user).objects.create_user("rate-limited")
    UserLimits.objects.create(user=other_user, rpm_limit=2)
    clients = [sdk(gateway, create_api_key(other_user, f"k{i}")[1]) for i in range(3)]
    clients[0].chat.completions.create(model="mock-gpt-model", messages=HI)
    clients[1].chat.completions.create(model="mock-gpt-model", messages=HI)
    with pytest.raises(openai.RateLimitError) as limited:
        clients[2].chat.completions.create(model="mock-gpt-model", messages=HI)
    assert limited.value.body["type"] == "requests"


def test_concurrent_overspend_stays_within_the_documented_bound(gateway: Any, user: Any) -> None:
    """Without max_tokens only the prompt is reserved: the overrun is at most the in-flight requests' output."""
    ModelRoute.objects.create(
        model_name="priced-slow",
        provider="mock",
        upstream_model="priced-slow",
        options={"latency_ms": 200},
        input_price_per_million=Decimal("1000"),
        output_price_per_million=Decimal("1000"),
    )
    budget = Decimal("0.1")
    key, secret = create_api_key(user, "race", spend_budget=budget)
    messages = [{"role": "user", "content": " ".join(["word"] * 10)}]  # 16 prompt, 10 completion tokens
    prompt_cost, output_cost = Decimal("0.016"), Decimal("0.010")
    concurrency = 12

    async def one(client: openai.AsyncOpenAI) -> bool:
        try:
            await client.chat.completions.create(model="priced-slow", messages=messages)
            return True
        except openai.RateLimitError:
            return False

    async def run() -> list[bool]:
        client = openai.AsyncOpenAI(api_key=secret, base_url=gateway.url + "/v1", max_retries=0)
        results = await asyncio.gather(*(one(client) for _ in range(concurrency)))
        await client.close()
        return list(results)

    results = asyncio.run(run())
    served = sum(results)
    spent = sum(r.cost for r in log_rows(api_key=key, status_code=200))
    assert served == len(log_rows(api_key=key, status_code=200))
    # Admission needs spent + reserved prompts + this prompt <= budget: at most 6 prompts of 0.016
    # fit while all are in flight (fewer if some finished first and turned into real spend).
    assert 1 <= served <= int(budget / prompt_cost) == 6 and served < concurrency
    assert spent == served * (prompt_cost + output_cost)
    assert spent - budget <= served * output_cost  # the documented bound
    assert all(r.error_code == "insufficient_quota" for r in log_rows(api_key=key, status_code=429))
