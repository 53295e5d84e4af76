"""Token buckets per (client IP, route), kept in the ingress process.

Each ingress replica limits on its own; behind N replicas a client gets up to N times the rate,
which is the price of needing no shared store. Buckets idle long enough to be full are dropped so
memory stays bounded under address spraying.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(
        self,
        per_minute: int,
        *,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.rate = per_minute / 60.0
        self.capacity = float(burst if burst is not None else max(1, per_minute // 6))
        self.clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._last_sweep = clock()

    def acquire(self, client: str, route: str) -> float:
        """Take a token; returns 0 when allowed, else the seconds to wait (for Retry-After)."""
        now = self.clock()
        self._sweep(now)
        bucket = self._buckets.setdefault((client, route), _Bucket(self.capacity, now))
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _sweep(self, now: float) -> None:
        refill_time = self.capacity / self.rate
        if now - self._last_sweep < refill_time:
            return
        self._buckets = {
            key: b for key, b in self._buckets.items() if now - b.updated < refill_time
        }
        self._last_sweep = now


def retry_after_header(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))
