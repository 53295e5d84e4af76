"""One retry loop for the scraping gateways: jittered exponential backoff, for what can heal.

The BCV and Binance adapters fail in the same ways (timeouts, dropped connections, 429, 5xx) and
must give up at once on the ones retrying cannot fix (TLS, 403, other 4xx, a bad body). Each
gateway's errors say which is which through `colmena.errors.ColmenaError.retryable` (an HTTP
error from its status, via `retryable_http`); this module only owns the loop, so the attempt
counting and the backoff schedule cannot drift apart between them.

The schedule is Dramatiq's (`dramatiq.common.compute_backoff`): the n-th retry waits
`backoff * 2**n` stretched by a random factor in [1, 2), and a wait past the cap becomes 50-100%
of the cap, so clients that failed together do not come back together. It is restated here
rather than called because compute_backoff draws from the process-wide `random.uniform` in whole
milliseconds: the random source and the sleep are parameters here, so a test pins every delay
without waiting for one.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from colmena.errors import ColmenaError

log = structlog.get_logger(__name__)

T = TypeVar("T")
Uniform = Callable[[float, float], float]
Sleep = Callable[[float], Awaitable[object]]

DEFAULT_MAX_BACKOFF_S = 30.0
MAX_EXPONENT = 32  # compute_backoff's: past it the cap decides anyway


def retryable_http(status: int) -> bool:
    """429 and 5xx may heal on their own; any other status will not."""
    return status >= 500 or status == 429


def backoff_delay(retry: int, *, backoff: float, max_backoff: float, uniform: Uniform) -> float:
    """Seconds to wait before retry number `retry` (0 for the first), as compute_backoff does."""
    delay = backoff * 2 ** min(retry, MAX_EXPONENT) * uniform(1, 2)
    if delay > max_backoff:
        delay = max_backoff * uniform(0.5, 1)
    return delay


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    backoff: float,
    event: str,
    max_backoff: float = DEFAULT_MAX_BACKOFF_S,
    uniform: Uniform = random.uniform,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """Await `call()` up to `attempts` times, waiting `backoff_delay` between tries.

    Only a `ColmenaError` whose `retryable` is true is retried; the last one, a permanent one
    and anything else are raised as they are. `event` names the warning logged before each
    retry (the gateway's, e.g. "bcv_fetch_retry"), with the attempt number, the error's outcome
    label and the delay: never the body or URL.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    attempt = 1
    while True:
        try:
            return await call()
        except ColmenaError as exc:
            if attempt >= attempts or not exc.retryable:
                raise
            delay = backoff_delay(
                attempt - 1, backoff=backoff, max_backoff=max_backoff, uniform=uniform
            )
            log.warning(
                event, attempt=attempt, outcome=getattr(exc, "outcome", "error"), delay_s=delay
            )
            await sleep(delay)
            attempt += 1
