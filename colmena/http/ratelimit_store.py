"""Where rate-limit budgets live: in Redis (shared by every ingress process) or in the process.

Both run GCRA, the generic cell rate algorithm: a budget is one number per key, its theoretical
arrival time (TAT). A request passes when `TAT + interval - burst * interval <= now`, and then
moves TAT one interval on. That is a token bucket without a refill loop: O(1) state, exact
`Retry-After`, and one key that expires when the budget is full again. Several budgets are
decided together and atomically (a Lua script in Redis): a request spends from all or none.

Redis down: `FallbackStore` fails open to the process's own budgets. Requests keep being
answered and limits keep holding per process (N times the rate behind N processes) until Redis
answers again; the switch is logged and counted (`rate_limit_store_down`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
import redis.exceptions
import structlog

from colmena.config.metrics import SECURITY_EVENTS
from colmena.config.rate_limit_settings import RateRule

log = structlog.get_logger(__name__)

US = 1_000_000
# Any failure of Redis, not only an unreachable one: a server that answers but refuses (protected
# mode, NOAUTH, out of memory, a read-only replica) holds no budget either.
REDIS_DOWN = (redis.exceptions.RedisError, OSError)


@dataclass(frozen=True)
class Take:
    """One budget a request is decided against; `spend=False` only asks whether one more fits."""

    key: str
    rule: RateRule
    spend: bool = True


@dataclass(frozen=True)
class Verdict:
    """`refused_by` is the index of the first take that did not fit (None: all passed);
    `remaining` is what each budget has left after this call, when all passed."""

    refused_by: int | None
    wait_s: float
    remaining: tuple[int, ...] = ()


class Store(Protocol):
    async def apply(self, takes: Sequence[Take]) -> Verdict: ...

    async def close(self) -> None: ...


def _interval_us(rule: RateRule) -> int:
    return max(1, round(rule.interval_s * US))


def decide(
    now_us: int, stored: Sequence[int | None], takes: Sequence[Take]
) -> tuple[Verdict, list[int]]:
    """GCRA over several budgets at one instant: the verdict and, when all passed, each key's
    TAT afterwards (nothing is spent when one budget refuses)."""
    tats = [max(tat if tat is not None else now_us, now_us) for tat in stored]
    for index, (tat, take) in enumerate(zip(tats, takes, strict=True)):
        interval = _interval_us(take.rule)
        allow_at = tat + interval - take.rule.burst * interval
        if now_us < allow_at:
            return Verdict(index, (allow_at - now_us) / US), []
    after: list[int] = []
    remaining: list[int] = []
    for tat, take in zip(tats, takes, strict=True):
        interval = _interval_us(take.rule)
        moved = tat + interval if take.spend else tat
        after.append(moved)
        remaining.append((now_us - moved + take.rule.burst * interval) // interval)
    return Verdict(None, 0.0, tuple(remaining)), after


class MemoryStore:
    """The budgets of this process alone: `colmena dev`, one ingress, or Redis being down.

    Keys whose budget is full again are swept once a minute; past `max_keys` (address spraying)
    the oldest key is dropped, so memory stays bounded whatever the traffic.
    """

    SWEEP_S = 60.0

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self._tats: dict[str, int] = {}
        self._next_sweep = clock() + self.SWEEP_S

    async def apply(self, takes: Sequence[Take]) -> Verdict:
        now_us = round(self.clock() * US)
        self._sweep(now_us)
        verdict, after = decide(now_us, [self._tats.get(take.key) for take in takes], takes)
        if verdict.refused_by is None:
            for take, tat in zip(takes, after, strict=True):
                if take.spend:
                    self._tats.pop(take.key, None)
                    if len(self._tats) >= self.max_keys:
                        self._tats.pop(next(iter(self._tats)))
                    self._tats[take.key] = tat
        return verdict

    def _sweep(self, now_us: int) -> None:
        if now_us < self._next_sweep * US:
            return
        self._tats = {key: tat for key, tat in self._tats.items() if tat > now_us}
        self._next_sweep = now_us / US + self.SWEEP_S

    async def close(self) -> None:
        self._tats.clear()


# KEYS: one per budget; ARGV: interval (µs), burst, spend (1 or 0) for each key, in order.
# Redis's own clock decides, so ingress hosts whose clocks disagree still share one budget.
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local allow_at = tat + interval - burst * interval
  if now < allow_at then return {i, allow_at - now} end
  tats[i] = tat
end
local result = {0, 0}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local tat = tats[i]
  if ARGV[3 * i] == '1' then
    tat = tat + interval
    local ttl = math.max(1, math.ceil((tat - now) / 1000))
    redis.call('SET', key, string.format('%.0f', tat), 'PX', ttl)
  end
  result[i + 2] = math.floor((now - tat + burst * interval) / interval)
end
return result
"""


class RedisStore:
    """Budgets in Redis, decided by one Lua script per request (atomic, one round trip)."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._script = client.register_script(GCRA_SCRIPT)

    async def apply(self, takes: Sequence[Take]) -> Verdict:
        args: list[int] = []
        for take in takes:
            args += [_interval_us(take.rule), take.rule.burst, int(take.spend)]
        reply = await self._script(keys=[self.prefix + take.key for take in takes], args=args)
        refused = int(reply[0])
        if refused:
            return Verdict(refused - 1, int(reply[1]) / US)
        return Verdict(None, 0.0, tuple(int(left) for left in reply[2:]))

    async def close(self) -> None:
        await self.client.aclose()


class FallbackStore:
    """Redis first; while it does not answer, this process's own budgets (fail open, bounded).

    After a failure Redis is left alone for `retry_s`, so a dead Redis costs one timeout per
    `retry_s`, not one per request.
    """

    def __init__(
        self,
        shared: RedisStore,
        local: MemoryStore,
        *,
        retry_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shared = shared
        self.local = local
        self.retry_s = retry_s
        self.clock = clock
        self._retry_at: float | None = None

    async def apply(self, takes: Sequence[Take]) -> Verdict:
        if self._retry_at is None or self.clock() >= self._retry_at:
            try:
                verdict = await self.shared.apply(takes)
            except REDIS_DOWN as exc:
                self._went_down(exc)
            else:
                if self._retry_at is not None:
                    log.warning("rate limits: Redis answers again; budgets are shared again")
                    self._retry_at = None
                return verdict
        return await self.local.apply(takes)

    def _went_down(self, exc: BaseException) -> None:
        if self._retry_at is None:
            SECURITY_EVENTS.labels(reason="rate_limit_store_down").inc()
            log.warning(
                "rate limits: Redis does not answer; limiting per process until it does",
                error=type(exc).__name__,
            )
        self._retry_at = self.clock() + self.retry_s

    async def close(self) -> None:
        await self.shared.close()
        await self.local.close()
