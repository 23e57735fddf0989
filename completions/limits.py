"""Per-key limits: allowed models, requests and tokens per minute, token and spend budgets.

A key's effective limits are its own where set, else its user's defaults
(`UserLimits`), else none. Before a request is sent upstream, `admit()` checks
and takes, atomically:

- one request from the key's requests-per-minute bucket, and the request's
  estimated tokens (prompt + `max_tokens` when given) from its tokens-per-minute
  bucket (token buckets that refill continuously over a minute);
- a reservation of the estimated tokens and cost against the key's budgets: a
  request is admitted only if spent + reserved + its own estimate fits the
  budget.

After the request, `settle()` replaces the estimate by the real usage: the
budget counters grow by what was really spent and the reservation is
released. So a budget can only be overrun by what in-flight requests spend
beyond their reservation: nothing when clients send `max_tokens`, otherwise
at most the output of the requests in flight when the budget runs out.

With REDIS_URL set, all of this runs in Redis Lua scripts, so the limits hold
across every worker process; without it, in process (one process only).
Budget counters live in Redis for the current period and are rebuilt from the
daily roll-ups when missing.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .caller import Limits
from .db import run_db
from .errors import ModelNotFound, QuotaExceeded, RateLimited
from .protocol import random_id

WINDOW_MS = 60_000
RESERVATION_TTL_MS = 15 * 60_000  # a reservation older than this is a crashed worker's: dropped


def check_model(limits: Limits, model: str) -> None:
    """A model outside the key's list looks like an unknown model (404), as OpenAI answers."""
    if not limits.allows(model):
        raise ModelNotFound(model)


def period_id(period: str, now: datetime | None = None) -> str:
    if period == "total":
        return "total"
    return (now or datetime.now(UTC)).strftime("%Y-%m")


def duration(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `6m0s`, `20ms`."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, int(seconds * 1000))}ms"
    minutes, secs = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


@dataclass
class Decision:
    """What the limiter says about one request."""

    ok: bool
    reason: str = ""  # requests | tokens | too_large | token_budget | spend_budget | init
    rpm_remaining: int = 0
    rpm_reset: float = 0.0
    tpm_remaining: int = 0
    tpm_reset: float = 0.0
    retry_after: float = 0.0


@dataclass
class Admission:
    """An admitted request's reservation, settled once with the real usage."""

    key_id: int
    limits: Limits
    estimate_tokens: int
    estimate_nanos: int
    period: str
    token: str = ""  # set when a reservation is made (identifies it in the budget's ledger)
    headers: dict[str, str] = field(default_factory=dict)
    settled: bool = False


def headers_for(limits: Limits, d: Decision) -> dict[str, str]:
    """OpenAI's rate-limit headers for the limits a key has."""
    out: dict[str, str] = {}
    if limits.rpm is not None:
        out["x-ratelimit-limit-requests"] = str(limits.rpm)
        out["x-ratelimit-remaining-requests"] = str(max(0, d.rpm_remaining))
        out["x-ratelimit-reset-requests"] = duration(d.rpm_reset)
    if limits.tpm is not None:
        out["x-ratelimit-limit-tokens"] = str(limits.tpm)
        out["x-ratelimit-remaining-tokens"] = str(max(0, d.tpm_remaining))
        out["x-ratelimit-reset-tokens"] = duration(d.tpm_reset)
    return out


def refusal(limits: Limits, d: Decision, estimate_tokens: int) -> RateLimited | QuotaExceeded:
    """The 429 for a refused request, with OpenAI's codes and headers."""
    headers = headers_for(limits, d)
    if d.reason in ("token_budget", "spend_budget"):
        what = "token" if d.reason == "token_budget" else "spend"
        window = "this month" if limits.period == "month" else "in total"
        headers["x-should-retry"] = "false"
        return QuotaExceeded(
            f"You exceeded your current quota: this API key's {what} budget {window} is used up "
            "(or would be by this request). Ask the gateway operator to raise it.",
            headers=headers,
        )
    headers["retry-after"] = str(max(1, math.ceil(d.retry_after)))
    if d.reason == "too_large":
        return RateLimited(
            f"Request too large: it needs about {estimate_tokens} tokens, more than this key's limit of "
            f"{limits.tpm} tokens per minute. Send less or lower max_tokens.",
            type="tokens",
            headers={k: v for k, v in headers.items() if k != "retry-after"} | {"x-should-retry": "false"},
        )
    if d.reason == "tokens":
        return RateLimited(
            f"Rate limit reached for tokens per minute: limit {limits.tpm}, remaining {max(0, d.tpm_remaining)}, "
            f"this request needs about {estimate_tokens}. Please try again in {duration(d.retry_after)}.",
            type="tokens",
            headers=headers,
        )
    return RateLimited(
        f"Rate limit reached for requests per minute: limit {limits.rpm}. "
        f"Please try again in {duration(d.retry_after)}.",
        type="requests",
        headers=headers,
    )


class Limiter:
    """Interface: admit before the upstream call, settle after it."""

    def __init__(self) -> None:
        self._settling: set[asyncio.Task[None]] = set()

    async def decide(self, admission: Admission, now_ms: int) -> Decision:
        raise NotImplementedError

    async def settle_counts(self, admission: Admission, tokens: int, nanos: int) -> None:
        raise NotImplementedError

    async def init_budget(self, admission: Admission) -> None:
        raise NotImplementedError

    async def admit(self, key_id: int, limits: Limits, estimate_tokens: int, estimate_nanos: int) -> Admission:
        """Take the request's share of the key's limits, or raise the 429 that says which limit."""
        if not limits.any:
            return Admission(key_id, limits, estimate_tokens, estimate_nanos, "")
        admission = Admission(
            key_id, limits, estimate_tokens, estimate_nanos, period_id(limits.period), random_id("", 16)
        )
        now_ms = int(time.time() * 1000)
        decision = await self.decide(admission, now_ms)
        if decision.reason == "init":
            await self.init_budget(admission)
            decision = await self.decide(admission, now_ms)
        if not decision.ok:
            admission.settled = True
            raise refusal(limits, decision, estimate_tokens)
        admission.headers = headers_for(limits, decision)
        return admission

    async def settle(self, admission: Admission, tokens: int, nanos: int) -> None:
        """Replace the reservation by what the request really used (once)."""
        if admission.settled or not admission.limits.any:
            admission.settled = True
            return
        admission.settled = True
        await self.settle_counts(admission, tokens, nanos)

    def settle_soon(self, admission: Admission, tokens: int, nanos: int) -> None:
        """Settle in the background: the client never waits for it."""
        if admission.settled or not admission.limits.any:
            return
        task = asyncio.get_running_loop().create_task(self.settle(admission, tokens, nanos))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)


async def load_spent(admission: Admission) -> tuple[int, int]:
    from .usage import spent

    return await run_db(spent, admission.key_id, admission.limits.period)


# ---- in process ---------------------------------------------------------------------


def seconds_to_refill(amount: float, per_minute: int) -> float:
    """How long a bucket refilling `per_minute` a minute takes to regain `amount`."""
    return amount * WINDOW_MS / per_minute / 1000


@dataclass
class _Bucket:
    level: float
    stamp_ms: int


class LocalLimiter(Limiter):
    """Limits kept in this process: correct for one worker only."""

    def __init__(self) -> None:
        super().__init__()
        self.buckets: dict[str, _Bucket] = {}
        self.spent: dict[str, list[int]] = {}  # budget key -> [tokens, nanos]
        self.reserved: dict[str, dict[str, tuple[int, int, int]]] = {}  # budget key -> token -> (tokens, nanos, ms)

    def _refill(self, name: str, capacity: int, now_ms: int) -> _Bucket:
        bucket = self.buckets.get(name)
        if bucket is None:
            bucket = self.buckets[name] = _Bucket(capacity, now_ms)
        rate = capacity / WINDOW_MS
        bucket.level = min(capacity, bucket.level + (now_ms - bucket.stamp_ms) * rate)
        bucket.stamp_ms = now_ms
        return bucket

    def _budget_key(self, a: Admission) -> str:
        return f"{a.key_id}:{a.period}"

    async def init_budget(self, admission: Admission) -> None:
        key = self._budget_key(admission)
        if key not in self.spent:
            tokens, nanos = await load_spent(admission)
            self.spent.setdefault(key, [tokens, nanos])

    async def decide(self, a: Admission, now_ms: int) -> Decision:
        lim = a.limits
        d = Decision(ok=True)
        budget_key = self._budget_key(a)
        if lim.has_budget:
            if budget_key not in self.spent:
                return Decision(ok=False, reason="init")
            reservations = self.reserved.setdefault(budget_key, {})
            for token, (_, _, at) in list(reservations.items()):
                if now_ms - at > RESERVATION_TTL_MS:
                    del reservations[token]
            held_tokens = sum(t for t, _, _ in reservations.values())
            held_nanos = sum(n for _, n, _ in reservations.values())
            used_tokens, used_nanos = self.spent[budget_key]
            if lim.token_budget is not None and used_tokens + held_tokens + a.estimate_tokens > lim.token_budget:
                return Decision(ok=False, reason="token_budget")
            if (
                lim.spend_budget_nanos is not None
                and used_nanos + held_nanos + a.estimate_nanos > lim.spend_budget_nanos
            ):
                return Decision(ok=False, reason="spend_budget")
        rpm = self._refill(f"rpm:{a.key_id}", lim.rpm, now_ms) if lim.rpm is not None else None
        tpm = self._refill(f"tpm:{a.key_id}", lim.tpm, now_ms) if lim.tpm is not None else None
        if rpm is not None and lim.rpm is not None and rpm.level < 1:
            return Decision(
                ok=False,
                reason="requests",
                rpm_reset=seconds_to_refill(lim.rpm - rpm.level, lim.rpm),
                retry_after=seconds_to_refill(1 - rpm.level, lim.rpm),
            )
        if tpm is not None and lim.tpm is not None:
            if a.estimate_tokens > lim.tpm:
                return Decision(ok=False, reason="too_large", tpm_remaining=int(tpm.level))
            if tpm.level < a.estimate_tokens or tpm.level <= 0:
                return Decision(
                    ok=False,
                    reason="tokens",
                    rpm_remaining=int(rpm.level) if rpm else 0,
                    tpm_remaining=int(tpm.level),
                    tpm_reset=seconds_to_refill(lim.tpm - tpm.level, lim.tpm),
                    retry_after=seconds_to_refill(max(a.estimate_tokens, 1) - tpm.level, lim.tpm),
                )
        if rpm is not None and lim.rpm is not None:
            rpm.level -= 1
            d.rpm_remaining = int(rpm.level)
            d.rpm_reset = seconds_to_refill(lim.rpm - rpm.level, lim.rpm)
        if tpm is not None and lim.tpm is not None:
            tpm.level -= a.estimate_tokens
            d.tpm_remaining = int(tpm.level)
            d.tpm_reset = seconds_to_refill(lim.tpm - tpm.level, lim.tpm)
        if lim.has_budget:
            self.reserved[budget_key][a.token] = (a.estimate_tokens, a.estimate_nanos, now_ms)
        return d

    async def settle_counts(self, a: Admission, tokens: int, nanos: int) -> None:
        lim = a.limits
        if lim.tpm is not None:
            bucket = self._refill(f"tpm:{a.key_id}", lim.tpm, int(time.time() * 1000))
            bucket.level = max(-lim.tpm, bucket.level - (tokens - a.estimate_tokens))
        if lim.has_budget:
            budget_key = self._budget_key(a)
            self.reserved.get(budget_key, {}).pop(a.token, None)
            if budget_key in self.spent:
                self.spent[budget_key][0] += tokens
                self.spent[budget_key][1] += nanos


# ---- Redis -------------------------------------------------------------------------------

# KEYS: rpm bucket, tpm bucket, spent tokens, spent nanos, reservations (zset), reservation amounts (hash)
# ARGV: now_ms, rpm, tpm, token_budget, spend_budget, est_tokens, est_nanos, token, has_budget
_ADMIT = """
local now = tonumber(ARGV[1])
local rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
local token_budget, spend_budget = tonumber(ARGV[4]), tonumber(ARGV[5])
local est_tokens, est_nanos = tonumber(ARGV[6]), tonumber(ARGV[7])
local window = 60000

local function refill(key, cap)
  local state = redis.call('HMGET', key, 'level', 'stamp')
  local level, stamp = tonumber(state[1]), tonumber(state[2])
  if level == nil then level, stamp = cap, now end
  level = math.min(cap, level + (now - stamp) * cap / window)
  return level
end

if ARGV[9] == '1' then
  local used_tokens, used_nanos = redis.call('GET', KEYS[3]), redis.call('GET', KEYS[4])
  if not used_tokens or not used_nanos then return {'init', 0, 0, 0, 0, 0} end
  local stale = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now - 900000)
  for _, member in ipairs(stale) do redis.call('HDEL', KEYS[6], member .. ':t', member .. ':n') end
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - 900000)
  local held_tokens, held_nanos = 0, 0
  for _, member in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
    held_tokens = held_tokens + (tonumber(redis.call('HGET', KEYS[6], member .. ':t')) or 0)
    held_nanos = held_nanos + (tonumber(redis.call('HGET', KEYS[6], member .. ':n')) or 0)
  end
  if token_budget >= 0 and tonumber(used_tokens) + held_tokens + est_tokens > token_budget then
    return {'token_budget', 0, 0, 0, 0, 0} end
  if spend_budget >= 0 and tonumber(used_nanos) + held_nanos + est_nanos > spend_budget then
    return {'spend_budget', 0, 0, 0, 0, 0} end
end

local rpm_level, tpm_level = 0, 0
if rpm >= 0 then
  rpm_level = refill(KEYS[1], rpm)
  if rpm_level < 1 then
    local reset, wait = (rpm - rpm_level) * window / rpm, (1 - rpm_level) * window / rpm
    return {'requests', 0, tostring(reset), 0, 0, tostring(wait)} end
end
if tpm >= 0 then
  tpm_level = refill(KEYS[2], tpm)
  if est_tokens > tpm then return {'too_large', 0, 0, math.floor(tpm_level), 0, 0} end
  if tpm_level < est_tokens or tpm_level <= 0 then
    local need = math.max(est_tokens, 1) - tpm_level
    local reset, wait = (tpm - tpm_level) * window / tpm, need * window / tpm
    return {'tokens', math.floor(rpm_level), 0, math.floor(tpm_level), tostring(reset), tostring(wait)} end
end
if rpm >= 0 then
  rpm_level = rpm_level - 1
  redis.call('HSET', KEYS[1], 'level', tostring(rpm_level), 'stamp', now)
  redis.call('PEXPIRE', KEYS[1], 2 * window)
end
if tpm >= 0 then
  tpm_level = tpm_level - est_tokens
  redis.call('HSET', KEYS[2], 'level', tostring(tpm_level), 'stamp', now)
  redis.call('PEXPIRE', KEYS[2], 2 * window)
end
if ARGV[9] == '1' then
  redis.call('ZADD', KEYS[5], now, ARGV[8])
  redis.call('HSET', KEYS[6], ARGV[8] .. ':t', est_tokens, ARGV[8] .. ':n', est_nanos)
  redis.call('PEXPIRE', KEYS[5], 1800000)
  redis.call('PEXPIRE', KEYS[6], 1800000)
end
return {'ok', math.floor(rpm_level), rpm >= 0 and tostring((rpm - rpm_level) * window / rpm) or '0',
        math.floor(tpm_level), tpm >= 0 and tostring((tpm - tpm_level) * window / tpm) or '0', 0}
"""

# KEYS: tpm bucket, spent tokens, spent nanos, reservations, amounts
# ARGV: now_ms, tpm, delta_tokens, tokens, nanos, token, has_budget
_SETTLE = """
local now, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
if tpm >= 0 then
  local state = redis.call('HMGET', KEYS[1], 'level', 'stamp')
  local level, stamp = tonumber(state[1]), tonumber(state[2])
  if level == nil then level, stamp = tpm, now end
  level = math.min(tpm, level + (now - stamp) * tpm / 60000)
  level = math.max(-tpm, level - tonumber(ARGV[3]))
  redis.call('HSET', KEYS[1], 'level', tostring(level), 'stamp', now)
  redis.call('PEXPIRE', KEYS[1], 120000)
end
if ARGV[7] == '1' then
  redis.call('ZREM', KEYS[4], ARGV[6])
  redis.call('HDEL', KEYS[5], ARGV[6] .. ':t', ARGV[6] .. ':n')
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('INCRBY', KEYS[2], ARGV[4]) end
  if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('INCRBY', KEYS[3], ARGV[5]) end
end
return 1
"""


class RedisLimiter(Limiter):
    """Limits kept in Redis, atomic across all workers (one Lua script per admission and per settlement)."""

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__()
        self.url = url
        self.prefix = prefix
        self._clients: dict[Any, Any] = {}

    def _client(self) -> Any:
        import redis.asyncio as redis

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=5)
            self._clients[loop] = client
            self._admit = client.register_script(_ADMIT)
            self._settle = client.register_script(_SETTLE)
        return client

    def _keys(self, a: Admission) -> dict[str, str]:
        base = f"{self.prefix}:lim:{a.key_id}"
        budget = f"{base}:budget:{a.period}"
        return {
            "rpm": f"{base}:rpm",
            "tpm": f"{base}:tpm",
            "spent_tokens": f"{budget}:tokens",
            "spent_nanos": f"{budget}:nanos",
            "reservations": f"{budget}:held",
            "amounts": f"{budget}:held-amounts",
        }

    async def init_budget(self, a: Admission) -> None:
        client = self._client()
        tokens, nanos = await load_spent(a)
        k = self._keys(a)
        ttl = None if a.period == "total" else 40 * 24 * 3600
        await client.set(k["spent_tokens"], tokens, nx=True, ex=ttl)
        await client.set(k["spent_nanos"], nanos, nx=True, ex=ttl)

    async def decide(self, a: Admission, now_ms: int) -> Decision:
        client = self._client()
        lim = a.limits
        k = self._keys(a)
        result = await self._admit(
            keys=[k["rpm"], k["tpm"], k["spent_tokens"], k["spent_nanos"], k["reservations"], k["amounts"]],
            args=[
                now_ms,
                -1 if lim.rpm is None else lim.rpm,
                -1 if lim.tpm is None else lim.tpm,
                -1 if lim.token_budget is None else lim.token_budget,
                -1 if lim.spend_budget_nanos is None else lim.spend_budget_nanos,
                a.estimate_tokens,
                a.estimate_nanos,
                a.token,
                "1" if lim.has_budget else "0",
            ],
            client=client,
        )
        reason, rpm_remaining, rpm_reset, tpm_remaining, tpm_reset, retry = result
        return Decision(
            ok=reason == "ok",
            reason="" if reason == "ok" else reason,
            rpm_remaining=int(rpm_remaining),
            rpm_reset=float(rpm_reset) / 1000,
            tpm_remaining=int(tpm_remaining),
            tpm_reset=float(tpm_reset) / 1000,
            retry_after=float(retry) / 1000,
        )

    async def settle_counts(self, a: Admission, tokens: int, nanos: int) -> None:
        client = self._client()
        lim = a.limits
        k = self._keys(a)
        await self._settle(
            keys=[k["tpm"], k["spent_tokens"], k["spent_nanos"], k["reservations"], k["amounts"]],
            args=[
                int(time.time() * 1000),
                -1 if lim.tpm is None else lim.tpm,
                tokens - a.estimate_tokens,
                tokens,
                nanos,
                a.token,
                "1" if lim.has_budget else "0",
            ],
            client=client,
        )
