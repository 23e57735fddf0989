"""Limits: requests and tokens per minute, token and spend budgets, per key and per user.

Limits apply to a **scope**: one API key, or one user across all of their keys.
A user's limits (`UserLimits`, set by staff) hold for the sum of everything the
user's keys do, so a new key never resets them; a key's own limits are further
caps on that key alone. Before a request is sent upstream, `admit()` checks and
takes, atomically and for every scope of the caller at once:

- one request from the scope's requests-per-minute bucket, and the request's
  estimated tokens (prompt + `max_tokens` when given) from its tokens-per-minute
  bucket (token buckets that refill continuously over a minute);
- a reservation of the estimated tokens and cost against the scope's budgets: a
  request is admitted only if spent + reserved + its own estimate fits the
  budget.

If any scope refuses, nothing is taken from any of them. After the request,
`settle()` replaces the estimate by the real usage: the budget counters grow by
what was really spent and the reservation is released. So a budget can only be
overrun by what in-flight requests spend beyond their reservation: nothing when
clients send `max_tokens`, otherwise at most the output of the requests in
flight when the budget runs out.

With REDIS_URL set, all of this runs in one Redis Lua script call per admission
and one per settlement (the calls of one turn of the event loop sent together as
one pipeline, `redis_pipeline.AutoPipeline`), so the limits hold across every
worker process; without it, in process (one process only). Budget counters live in Redis for the current
period and are rebuilt from the daily roll-ups when missing.

While Redis is unreachable, each worker admits requests in process against its
share of every limit (`LocalLimiter` with `workers`), and rebuilds the budget
counters Redis missed once it answers again (`RedisLimiter`). Without the
database, a budget whose counters are not loaded yet can't be checked: its
requests are a 503 with `retry-after`; rate limits need no database.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .caller import Scope
from .circuit import DATABASE_ERRORS, REDIS_ERRORS, Circuit
from .db import run_db
from .errors import QuotaExceeded, RateLimited, ServiceUnavailable, dependency_unavailable
from .protocol import random_id
from .redis_pipeline import AutoPipeline, Script

logger = logging.getLogger(__name__)

WINDOW_MS = 60_000
RESERVATION_TTL_MS = 15 * 60_000  # a reservation older than this is a crashed worker's: dropped


_MONTH: tuple[int, str] = (-1, "")  # (the minute it was computed in, the month then): read per request


def period_id(period: str, now: datetime | None = None) -> str:
    global _MONTH
    if period == "total":
        return "total"
    if now is not None:
        return now.strftime("%Y-%m")
    minute = int(time.time() // 60)
    if _MONTH[0] != minute:
        _MONTH = (minute, datetime.now(UTC).strftime("%Y-%m"))
    return _MONTH[1]


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
    """What the limiter says about one scope for one request."""

    ok: bool
    reason: str = ""  # requests | tokens | too_large | token_budget | spend_budget | init
    rpm_remaining: int = 0
    rpm_reset: float = 0.0
    tpm_remaining: int = 0
    tpm_reset: float = 0.0
    retry_after: float = 0.0


@dataclass(frozen=True, slots=True)
class Share:
    """A request's claim on one scope: the scope and its budget period."""

    scope: Scope
    period: str


@dataclass
class Admission:
    """An admitted request's reservations, settled once with the real usage."""

    shares: tuple[Share, ...]
    estimate_tokens: int
    estimate_nanos: int
    token: str = ""  # identifies the reservations in the budgets' ledgers
    headers: dict[str, str] = field(default_factory=dict)
    settled: bool = False
    local: bool = False  # admitted by the in-process fallback while Redis was unreachable


def headers_for(shares: Sequence[Share], decisions: Sequence[Decision]) -> dict[str, str]:
    """OpenAI's rate-limit headers: for each kind of limit, the scope with the least left."""
    out: dict[str, str] = {}
    pairs = list(zip(shares, decisions, strict=True))
    for kind, per_scope in (
        ("requests", [(d.rpm_remaining, s.scope.limits.rpm, d.rpm_reset) for s, d in pairs]),
        ("tokens", [(d.tpm_remaining, s.scope.limits.tpm, d.tpm_reset) for s, d in pairs]),
    ):
        known = [(left, limit, reset) for left, limit, reset in per_scope if limit is not None]
        if known:
            left, limit, reset = min(known, key=lambda t: t[0])
            out[f"x-ratelimit-limit-{kind}"] = str(limit)
            out[f"x-ratelimit-remaining-{kind}"] = str(max(0, left))
            out[f"x-ratelimit-reset-{kind}"] = duration(reset)
    return out


def refusal(share: Share, d: Decision, estimate_tokens: int) -> RateLimited | QuotaExceeded:
    """The 429 for a request one scope refused, with OpenAI's codes and headers."""
    limits = share.scope.limits
    whose = "this API key's" if share.scope.kind == "key" else "your account's (all of its API keys together)"
    headers = headers_for([share], [d])
    if d.reason in ("token_budget", "spend_budget"):
        what = "token" if d.reason == "token_budget" else "spend"
        window = "this month" if limits.period == "month" else "in total"
        headers["x-should-retry"] = "false"
        return QuotaExceeded(
            f"You exceeded your current quota: {whose} {what} budget {window} is used up "
            "(or would be by this request). Ask the gateway operator to raise it.",
            headers=headers,
        )
    headers["retry-after"] = str(max(1, math.ceil(d.retry_after)))
    if d.reason == "too_large":
        return RateLimited(
            f"Request too large: it needs about {estimate_tokens} tokens, more than {whose} limit of "
            f"{limits.tpm} tokens per minute. Send less or lower max_tokens.",
            type="tokens",
            headers={k: v for k, v in headers.items() if k != "retry-after"} | {"x-should-retry": "false"},
        )
    if d.reason == "tokens":
        return RateLimited(
            f"Rate limit reached for tokens per minute ({whose}): limit {limits.tpm}, remaining "
            f"{max(0, d.tpm_remaining)}, this request needs about {estimate_tokens}. "
            f"Please try again in {duration(d.retry_after)}.",
            type="tokens",
            headers=headers,
        )
    return RateLimited(
        f"Rate limit reached for requests per minute ({whose}): limit {limits.rpm}. "
        f"Please try again in {duration(d.retry_after)}.",
        type="requests",
        headers=headers,
    )


class Limiter:
    """Interface: admit before the upstream call, settle after it."""

    def __init__(self, database: Circuit | None = None) -> None:
        self._settling: set[asyncio.Task[None]] = set()
        self.database = database or Circuit("database")  # budgets load the spend so far from there

    async def decide(self, admission: Admission, now_ms: int) -> tuple[int, list[Decision]]:
        """Check every share and take from all of them, or from none: (index of the refusing share or -1,
        the decisions)."""
        raise NotImplementedError

    async def settle_counts(self, admission: Admission, tokens: int, nanos: int) -> None:
        raise NotImplementedError

    async def init_budget(self, share: Share) -> None:
        raise NotImplementedError

    async def admit(self, scopes: Sequence[Scope], estimate_tokens: int, estimate_nanos: int) -> Admission:
        """Take the request's share of every scope's limits, or raise the 429 that says which limit."""
        shares = tuple(Share(s, period_id(s.limits.period)) for s in scopes if s.limits.any)
        if not shares:
            return Admission((), estimate_tokens, estimate_nanos, settled=True)
        return await self.admit_shares(shares, estimate_tokens, estimate_nanos)

    async def admit_shares(self, shares: tuple[Share, ...], estimate_tokens: int, estimate_nanos: int) -> Admission:
        admission = Admission(shares, estimate_tokens, estimate_nanos, random_id("", 16))
        now_ms = int(time.time() * 1000)
        for _ in range(len(shares) + 1):  # each scope's budget counters may need loading once
            refused, decisions = await self.decide(admission, now_ms)
            if refused < 0 or decisions[refused].reason != "init":
                break
            # The spend so far is in the database's roll-ups: without them, no budget can be checked.
            if not self.database.allow():
                admission.settled = True
                raise budget_unavailable(self.database)
            try:
                await self.init_budget(shares[refused])
            except DATABASE_ERRORS as exc:
                self.database.failed(exc)
                admission.settled = True
                raise budget_unavailable(self.database) from exc
            self.database.ok()
        if refused >= 0:
            admission.settled = True
            raise refusal(shares[refused], decisions[refused], estimate_tokens)
        admission.headers = headers_for(shares, decisions)
        return admission

    async def settle(self, admission: Admission, tokens: int, nanos: int) -> None:
        """Replace the reservations by what the request really used (once)."""
        if admission.settled:
            return
        admission.settled = True
        await self.settle_counts(admission, tokens, nanos)

    def settle_soon(self, admission: Admission, tokens: int, nanos: int) -> None:
        """Settle in the background: the client never waits for it."""
        if admission.settled:
            return
        task = asyncio.get_running_loop().create_task(self.settle(admission, tokens, nanos))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)


def budget_unavailable(database: Circuit) -> ServiceUnavailable:
    return dependency_unavailable("check this API key's budget", database.retry_after())


async def load_spent(share: Share) -> tuple[int, int]:
    from .usage import spent

    return await run_db(spent, share.scope.kind, share.scope.id, share.scope.limits.period)


# ---- in process ---------------------------------------------------------------------


def seconds_to_refill(amount: float, per_minute: float) -> float:
    """How long a bucket refilling `per_minute` a minute takes to regain `amount`."""
    return amount * WINDOW_MS / per_minute / 1000


@dataclass
class _Bucket:
    level: float
    stamp_ms: int


class LocalLimiter(Limiter):
    """Limits kept in this process: correct for one worker only.

    With `workers` > 1 it stands in for Redis while Redis is unreachable, as one of that many
    worker processes: each bucket holds and refills 1/workers of its limit (at least one
    request), and each budget admits 1/workers of what was left of it in the roll-ups when
    this process first needed it, so the workers together stay within every limit.
    """

    def __init__(self, workers: int = 1, database: Circuit | None = None) -> None:
        super().__init__(database)
        self.workers = max(1, workers)
        self.buckets: dict[str, _Bucket] = {}
        self.spent: dict[str, list[int]] = {}  # budget key -> [tokens, nanos]
        self.seed: dict[str, tuple[int, int]] = {}  # budget key -> (tokens, nanos) spent when first loaded
        self.reserved: dict[str, dict[str, tuple[int, int, int]]] = {}  # budget key -> token -> (tokens, nanos, ms)

    def _capacity(self, limit: int, floor: float = 0.0) -> float:
        """This process's share of a per-minute limit."""
        return limit if self.workers == 1 else max(floor, limit / self.workers)

    def _allowance(self, budget: int, seed: int) -> float:
        """This process's share of a budget: what was spent when it was loaded, plus 1/workers of the rest."""
        return budget if self.workers == 1 else seed + max(0, budget - seed) / self.workers

    def _refill(self, name: str, capacity: float, now_ms: int) -> _Bucket:
        bucket = self.buckets.get(name)
        if bucket is None:
            bucket = self.buckets[name] = _Bucket(capacity, now_ms)
        rate = capacity / WINDOW_MS
        bucket.level = min(capacity, bucket.level + (now_ms - bucket.stamp_ms) * rate)
        bucket.stamp_ms = now_ms
        return bucket

    @staticmethod
    def _budget_key(share: Share) -> str:
        return f"{share.scope.name}:{share.period}"

    async def init_budget(self, share: Share) -> None:
        key = self._budget_key(share)
        if key not in self.spent:
            tokens, nanos = await load_spent(share)
            self.spent.setdefault(key, [tokens, nanos])
            self.seed.setdefault(key, (tokens, nanos))

    async def decide(self, a: Admission, now_ms: int) -> tuple[int, list[Decision]]:
        decisions = [self._check(share, a, now_ms) for share in a.shares]
        for index, d in enumerate(decisions):
            if not d.ok:
                return index, decisions
        for share, d in zip(a.shares, decisions, strict=True):
            self._take(share, a, d, now_ms)
        return -1, decisions

    def _check(self, share: Share, a: Admission, now_ms: int) -> Decision:
        """What `share`'s scope says, without taking anything."""
        lim = share.scope.limits
        name = share.scope.name
        if lim.has_budget:
            budget_key = self._budget_key(share)
            if budget_key not in self.spent:
                return Decision(ok=False, reason="init")
            reservations = self.reserved.setdefault(budget_key, {})
            for token, (_, _, at) in list(reservations.items()):
                if now_ms - at > RESERVATION_TTL_MS:
                    del reservations[token]
            held_tokens = sum(t for t, _, _ in reservations.values())
            held_nanos = sum(n for _, n, _ in reservations.values())
            used_tokens, used_nanos = self.spent[budget_key]
            seed_tokens, seed_nanos = self.seed[budget_key]
            if lim.token_budget is not None and used_tokens + held_tokens + a.estimate_tokens > self._allowance(
                lim.token_budget, seed_tokens
            ):
                return Decision(ok=False, reason="token_budget")
            if lim.spend_budget_nanos is not None and used_nanos + held_nanos + a.estimate_nanos > self._allowance(
                lim.spend_budget_nanos, seed_nanos
            ):
                return Decision(ok=False, reason="spend_budget")
        d = Decision(ok=True)
        if lim.rpm is not None:
            cap = self._capacity(lim.rpm, floor=1.0)
            rpm = self._refill(f"rpm:{name}", cap, now_ms)
            if rpm.level < 1:
                return Decision(
                    ok=False,
                    reason="requests",
                    rpm_reset=seconds_to_refill(cap - rpm.level, cap),
                    retry_after=seconds_to_refill(1 - rpm.level, cap),
                )
            d.rpm_remaining = int(rpm.level - 1)
            d.rpm_reset = seconds_to_refill(cap - rpm.level + 1, cap)
        if lim.tpm is not None:
            cap = self._capacity(lim.tpm)
            tpm = self._refill(f"tpm:{name}", cap, now_ms)
            if a.estimate_tokens > lim.tpm:
                return Decision(ok=False, reason="too_large", tpm_remaining=int(tpm.level))
            need = min(a.estimate_tokens, cap)  # a request bigger than this process's share waits for a full bucket
            if tpm.level < need or tpm.level <= 0:
                return Decision(
                    ok=False,
                    reason="tokens",
                    rpm_remaining=d.rpm_remaining,
                    tpm_remaining=int(tpm.level),
                    tpm_reset=seconds_to_refill(cap - tpm.level, cap),
                    retry_after=seconds_to_refill(max(need, 1) - tpm.level, cap),
                )
            d.tpm_remaining = int(tpm.level - a.estimate_tokens)
            d.tpm_reset = seconds_to_refill(cap - tpm.level + a.estimate_tokens, cap)
        return d

    def _take(self, share: Share, a: Admission, d: Decision, now_ms: int) -> None:
        lim = share.scope.limits
        if lim.rpm is not None:
            self.buckets[f"rpm:{share.scope.name}"].level -= 1
        if lim.tpm is not None:
            self.buckets[f"tpm:{share.scope.name}"].level -= a.estimate_tokens
        if lim.has_budget:
            self.reserved[self._budget_key(share)][a.token] = (a.estimate_tokens, a.estimate_nanos, now_ms)

    async def settle_counts(self, a: Admission, tokens: int, nanos: int) -> None:
        now_ms = int(time.time() * 1000)
        for share in a.shares:
            lim = share.scope.limits
            if lim.tpm is not None:
                cap = self._capacity(lim.tpm)
                bucket = self._refill(f"tpm:{share.scope.name}", cap, now_ms)
                bucket.level = max(-cap, bucket.level - (tokens - a.estimate_tokens))
            if lim.has_budget:
                budget_key = self._budget_key(share)
                self.reserved.get(budget_key, {}).pop(a.token, None)
                if budget_key in self.spent:
                    self.spent[budget_key][0] += tokens
                    self.spent[budget_key][1] += nanos


# ---- Redis -------------------------------------------------------------------------------

# Reservations of a budget: members of a sorted set (scored by when they were taken), their amounts
# in a hash whose 'sum:t' and 'sum:n' fields keep the totals, so an admission reads two fields
# however many requests are in flight (summing the members was two calls per request in flight).
_RESERVATIONS = """
local function release(zset, amounts, member)
  if redis.call('ZREM', zset, member) == 1 then
    local t, n = redis.call('HGET', amounts, member .. ':t'), redis.call('HGET', amounts, member .. ':n')
    if t and t ~= '0' then redis.call('HINCRBY', amounts, 'sum:t', '-' .. t) end
    if n and n ~= '0' then redis.call('HINCRBY', amounts, 'sum:n', '-' .. n) end
    redis.call('HDEL', amounts, member .. ':t', member .. ':n')
  end
end

local function held(zset, amounts)
  if redis.call('ZCARD', zset) == 0 then
    redis.call('HDEL', amounts, 'sum:t', 'sum:n')  -- nothing in flight: the totals start again at 0
    return 0, 0
  end
  local sums = redis.call('HMGET', amounts, 'sum:t', 'sum:n')
  return math.max(0, tonumber(sums[1]) or 0), math.max(0, tonumber(sums[2]) or 0)
end
"""

# One call checks every scope of a request, then takes from all of them (or from none).
# KEYS, six per scope: rpm bucket, tpm bucket, spent tokens, spent nanos, reservations (zset), amounts (hash)
# ARGV: now_ms, est_tokens, est_nanos, token, scope count, then five per scope:
#       rpm, tpm, token_budget, spend_budget, has_budget ('1' or '0'); -1 means no such limit
# Returns {'ok', -1, then per scope: rpm_left, rpm_reset_ms, tpm_left, tpm_reset_ms}
#      or {reason, refusing scope (0-based), rpm_left, rpm_reset_ms, tpm_left, tpm_reset_ms, retry_ms}
_ADMIT = """
local now = tonumber(ARGV[1])
local est_tokens, est_nanos, token = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local n = tonumber(ARGV[5])
local window = 60000

local function refill(key, cap)
  local state = redis.call('HMGET', key, 'level', 'stamp')
  local level, stamp = tonumber(state[1]), tonumber(state[2])
  if level == nil then level, stamp = cap, now end
  return math.min(cap, level + (now - stamp) * cap / window)
end

local levels = {}
for i = 1, n do
  local a, k = 5 + (i - 1) * 5, (i - 1) * 6
  local rpm, tpm = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local token_budget, spend_budget = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  if ARGV[a + 5] == '1' then
    local used_tokens, used_nanos = redis.call('GET', KEYS[k + 3]), redis.call('GET', KEYS[k + 4])
    if not used_tokens or not used_nanos then return {'init', i - 1, 0, 0, 0, 0, 0} end
    local stale = redis.call('ZRANGEBYSCORE', KEYS[k + 5], '-inf', now - 900000)
    for _, member in ipairs(stale) do release(KEYS[k + 5], KEYS[k + 6], member) end
    local held_tokens, held_nanos = held(KEYS[k + 5], KEYS[k + 6])
    if token_budget >= 0 and tonumber(used_tokens) + held_tokens + est_tokens > token_budget then
      return {'token_budget', i - 1, 0, 0, 0, 0, 0} end
    if spend_budget >= 0 and tonumber(used_nanos) + held_nanos + est_nanos > spend_budget then
      return {'spend_budget', i - 1, 0, 0, 0, 0, 0} end
  end
  local rpm_level, tpm_level = 0, 0
  if rpm >= 0 then
    rpm_level = refill(KEYS[k + 1], rpm)
    if rpm_level < 1 then
      local reset, wait = (rpm - rpm_level) * window / rpm, (1 - rpm_level) * window / rpm
      return {'requests', i - 1, 0, tostring(reset), 0, 0, tostring(wait)} end
  end
  if tpm >= 0 then
    tpm_level = refill(KEYS[k + 2], tpm)
    if est_tokens > tpm then return {'too_large', i - 1, 0, 0, math.floor(tpm_level), 0, 0} end
    if tpm_level < est_tokens or tpm_level <= 0 then
      local need = math.max(est_tokens, 1) - tpm_level
      local reset, wait = (tpm - tpm_level) * window / tpm, need * window / tpm
      return {'tokens', i - 1, math.floor(rpm_level), 0, math.floor(tpm_level), tostring(reset), tostring(wait)}
    end
  end
  levels[i] = {rpm_level, tpm_level}
end

local out = {'ok', -1}
for i = 1, n do
  local a, k = 5 + (i - 1) * 5, (i - 1) * 6
  local rpm, tpm = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local rpm_level, tpm_level = levels[i][1], levels[i][2]
  if rpm >= 0 then
    rpm_level = rpm_level - 1
    redis.call('HSET', KEYS[k + 1], 'level', tostring(rpm_level), 'stamp', now)
    redis.call('PEXPIRE', KEYS[k + 1], 2 * window)
  end
  if tpm >= 0 then
    tpm_level = tpm_level - est_tokens
    redis.call('HSET', KEYS[k + 2], 'level', tostring(tpm_level), 'stamp', now)
    redis.call('PEXPIRE', KEYS[k + 2], 2 * window)
  end
  if ARGV[a + 5] == '1' then
    redis.call('ZADD', KEYS[k + 5], now, token)
    redis.call('HSET', KEYS[k + 6], token .. ':t', ARGV[2], token .. ':n', ARGV[3])
    redis.call('HINCRBY', KEYS[k + 6], 'sum:t', ARGV[2])
    redis.call('HINCRBY', KEYS[k + 6], 'sum:n', ARGV[3])
    redis.call('PEXPIRE', KEYS[k + 5], 1800000)
    redis.call('PEXPIRE', KEYS[k + 6], 1800000)
  end
  table.insert(out, math.floor(rpm_level))
  table.insert(out, rpm >= 0 and tostring((rpm - rpm_level) * window / rpm) or '0')
  table.insert(out, math.floor(tpm_level))
  table.insert(out, tpm >= 0 and tostring((tpm - tpm_level) * window / tpm) or '0')
end
return out
"""

# KEYS, five per scope: tpm bucket, spent tokens, spent nanos, reservations, amounts
# ARGV: now_ms, delta_tokens (real - estimated), tokens, nanos, token, scope count,
#       then two per scope: tpm (-1: none), has_budget ('1' or '0')
_SETTLE = """
local now, delta, tokens, nanos, token = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
for i = 1, tonumber(ARGV[6]) do
  local a, k = 6 + (i - 1) * 2, (i - 1) * 5
  local tpm = tonumber(ARGV[a + 1])
  if tpm >= 0 then
    local state = redis.call('HMGET', KEYS[k + 1], 'level', 'stamp')
    local level, stamp = tonumber(state[1]), tonumber(state[2])
    if level == nil then level, stamp = tpm, now end
    level = math.min(tpm, level + (now - stamp) * tpm / 60000)
    level = math.max(-tpm, level - delta)
    redis.call('HSET', KEYS[k + 1], 'level', tostring(level), 'stamp', now)
    redis.call('PEXPIRE', KEYS[k + 1], 120000)
  end
  if ARGV[a + 2] == '1' then
    release(KEYS[k + 4], KEYS[k + 5], token)
    if redis.call('EXISTS', KEYS[k + 2]) == 1 then redis.call('INCRBY', KEYS[k + 2], tokens) end
    if redis.call('EXISTS', KEYS[k + 3]) == 1 then redis.call('INCRBY', KEYS[k + 3], nanos) end
  end
end
return 1
"""

# KEYS: reservations, amounts; ARGV: the reservation tokens to release
_RELEASE = """
for _, token in ipairs(ARGV) do release(KEYS[1], KEYS[2], token) end
return 1
"""

ADMIT_SCRIPT, SETTLE_SCRIPT, RELEASE_SCRIPT = (Script(_RESERVATIONS + body) for body in (_ADMIT, _SETTLE, _RELEASE))


def _or_none(value: int | None) -> int:
    return -1 if value is None else value


MAX_ORPHANS = 100_000


class RedisLimiter(Limiter):
    """Limits kept in Redis, atomic across all workers (one Lua script call per admission and per settlement).

    While Redis is unreachable (the process's Redis circuit is open), requests are admitted by an
    in-process `LocalLimiter` standing in as one of GATEWAY_WORKERS workers (see there), and Redis
    is probed again every few seconds. Once it answers, the budget counters that missed spend
    during the outage are rebuilt from the roll-ups (after this worker's log rows are written,
    so the roll-ups hold that spend), and reservations whose settlement never reached Redis are
    released.
    """

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        circuit: Circuit | None = None,
        database: Circuit | None = None,
        workers: int = 1,
        timeout: float = 1.0,
        logged: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        super().__init__(database)
        self.url = url
        self.prefix = prefix
        self.circuit = circuit or Circuit("Redis")
        self.workers = workers
        self.timeout = timeout
        self.logged = logged  # waits until this process's request-log rows so far are written
        self.fallback = LocalLimiter(workers, self.database)
        self._fallback_used = False
        self._missed: set[Share] = set()  # budgets whose Redis counters lack spend
        self._orphans: list[tuple[Share, str]] = []  # reservations Redis holds for settled requests
        self._reconciling: asyncio.Task[None] | None = None
        self._clients: dict[asyncio.AbstractEventLoop, AutoPipeline] = {}
        self._keys_of: dict[tuple[str, str], dict[str, str]] = {}

    def _pipeline(self) -> AutoPipeline:
        """This event loop's client, whose commands go out in pipelines (a client belongs to one loop)."""
        loop = asyncio.get_running_loop()
        pipeline = self._clients.get(loop)
        if pipeline is None:
            import redis.asyncio as redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            if len(self._clients) > 8:  # loops that are gone (tests run one per test)
                self._clients = {lp: p for lp, p in self._clients.items() if not lp.is_closed()}
            # One immediate retry (a pooled connection Redis closed when it restarted), no backoff:
            # an unreachable Redis costs one connect timeout, then the circuit skips it.
            client = redis.Redis.from_url(
                self.url,
                decode_responses=True,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
            )
            pipeline = self._clients[loop] = AutoPipeline(client)
        return pipeline

    def _client(self) -> Any:
        return self._pipeline().client

    async def ping(self) -> None:
        """Raise unless Redis answers (readiness)."""
        await self._client().ping()

    def _keys(self, share: Share) -> dict[str, str]:
        """The Redis keys of one scope's counters (built once per scope and period)."""
        cache_key = (share.scope.name, share.period)
        keys = self._keys_of.get(cache_key)
        if keys is None:
            if len(self._keys_of) > 100_000:
                self._keys_of.clear()
            base = f"{self.prefix}:lim:{share.scope.name}"
            budget = f"{base}:budget:{share.period}"
            keys = self._keys_of[cache_key] = {
                "rpm": f"{base}:rpm",
                "tpm": f"{base}:tpm",
                "spent_tokens": f"{budget}:tokens",
                "spent_nanos": f"{budget}:nanos",
                "reservations": f"{budget}:held",
                "amounts": f"{budget}:held-amounts",
            }
        return keys

    async def admit_shares(self, shares: tuple[Share, ...], estimate_tokens: int, estimate_nanos: int) -> Admission:
        if self.circuit.allow():
            try:
                return await super().admit_shares(shares, estimate_tokens, estimate_nanos)
            except REDIS_ERRORS as exc:
                self.circuit.failed(exc)
        self._fallback_used = True
        admission = await self.fallback.admit_shares(shares, estimate_tokens, estimate_nanos)
        admission.local = True
        return admission

    def _answered(self) -> None:
        """Redis answered: after an outage, start the reconciliation and drop the stand-in's counts."""
        self.circuit.ok()
        if self._fallback_used:
            self._fallback_used = False
            self.fallback = LocalLimiter(self.workers, self.database)  # the next outage starts from the roll-ups
        if (self._missed or self._orphans) and self._reconciling is None:
            self._reconciling = asyncio.get_running_loop().create_task(self._reconcile())

    async def init_budget(self, share: Share) -> None:
        client = self._client()
        tokens, nanos = await load_spent(share)
        k = self._keys(share)
        ttl = None if share.period == "total" else 40 * 24 * 3600
        await client.set(k["spent_tokens"], tokens, nx=True, ex=ttl)
        await client.set(k["spent_nanos"], nanos, nx=True, ex=ttl)

    async def decide(self, a: Admission, now_ms: int) -> tuple[int, list[Decision]]:
        keys: list[str] = []
        args: list[Any] = [now_ms, a.estimate_tokens, a.estimate_nanos, a.token, len(a.shares)]
        for share in a.shares:
            lim = share.scope.limits
            keys.extend(self._keys(share).values())
            args += [_or_none(lim.rpm), _or_none(lim.tpm), _or_none(lim.token_budget)]
            args += [_or_none(lim.spend_budget_nanos), "1" if lim.has_budget else "0"]
        result = await self._pipeline().script(ADMIT_SCRIPT, keys, args)
        self._answered()
        reason, index = result[0], int(result[1])
        if reason != "ok":
            rpm_left, rpm_reset, tpm_left, tpm_reset, retry = result[2:7]
            refused = Decision(
                ok=False,
                reason=reason,
                rpm_remaining=int(rpm_left),
                rpm_reset=float(rpm_reset) / 1000,
                tpm_remaining=int(tpm_left),
                tpm_reset=float(tpm_reset) / 1000,
                retry_after=float(retry) / 1000,
            )
            return index, [refused if i == index else Decision(ok=True) for i in range(len(a.shares))]
        decisions = []
        for i in range(len(a.shares)):
            rpm_left, rpm_reset, tpm_left, tpm_reset = result[2 + 4 * i : 6 + 4 * i]
            decisions.append(
                Decision(
                    ok=True,
                    rpm_remaining=int(rpm_left),
                    rpm_reset=float(rpm_reset) / 1000,
                    tpm_remaining=int(tpm_left),
                    tpm_reset=float(tpm_reset) / 1000,
                )
            )
        return -1, decisions

    async def settle_counts(self, a: Admission, tokens: int, nanos: int) -> None:
        budgets = [share for share in a.shares if share.scope.limits.has_budget]
        if a.local:
            await self.fallback.settle_counts(a, tokens, nanos)
            self._missed.update(budgets)
            return
        if self.circuit.allow():
            keys: list[str] = []
            args: list[Any] = [int(time.time() * 1000), tokens - a.estimate_tokens, tokens, nanos, a.token]
            args.append(len(a.shares))
            for share in a.shares:
                k = self._keys(share)
                keys += [k["tpm"], k["spent_tokens"], k["spent_nanos"], k["reservations"], k["amounts"]]
                args += [_or_none(share.scope.limits.tpm), "1" if share.scope.limits.has_budget else "0"]
            try:
                await self._pipeline().script(SETTLE_SCRIPT, keys, args)
            except REDIS_ERRORS as exc:
                self.circuit.failed(exc)
            else:
                self._answered()
                return
        # Redis missed this settlement: its spend is not counted there and its reservation stays held.
        self._missed.update(budgets)
        if len(self._orphans) < MAX_ORPHANS:
            self._orphans += [(share, a.token) for share in budgets]

    async def _reconcile(self) -> None:
        """Rebuild the budget counters Redis missed spend for, and release the reservations it kept."""
        try:
            while self._missed or self._orphans:
                if self.logged is not None and not await self.logged():
                    await asyncio.sleep(self.circuit.retry_seconds)  # the database is slow or down: wait
                    continue
                missed, orphans = self._missed, self._orphans
                self._missed, self._orphans = set(), []
                try:
                    await self._forget(missed, orphans)
                except REDIS_ERRORS as exc:
                    self.circuit.failed(exc)
                    self._missed |= missed
                    self._orphans += orphans
                    return  # the next answer from Redis starts again
                logger.warning(
                    "Redis limits reconciled after an outage: %d budget counters rebuilt from the roll-ups, "
                    "%d reservations released",
                    len(missed),
                    len(orphans),
                )
        finally:
            self._reconciling = None

    async def _forget(self, missed: set[Share], orphans: list[tuple[Share, str]]) -> None:
        """Delete the missed counters (the next admission loads them from the roll-ups, which now hold
        the outage's spend) and the orphaned reservations."""
        pipeline = self._pipeline()
        calls: list[Awaitable[Any]] = []
        for share in missed:
            k = self._keys(share)
            calls.append(pipeline.execute("DEL", k["spent_tokens"], k["spent_nanos"]))
        tokens_of: dict[Share, list[str]] = {}
        for share, token in orphans:
            tokens_of.setdefault(share, []).append(token)
        for share, tokens in tokens_of.items():
            k = self._keys(share)
            for start in range(0, len(tokens), 1000):
                keys, batch = [k["reservations"], k["amounts"]], tokens[start : start + 1000]
                calls.append(pipeline.script(RELEASE_SCRIPT, keys, batch))
        await asyncio.gather(*calls)
