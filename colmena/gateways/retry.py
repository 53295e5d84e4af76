"""One retry loop for the scraping gateways: exponential backoff, only for what can heal.

The BCV and Binance adapters fail in the same ways (timeouts, dropped connections, 429, 5xx) and
must give up at once on the ones retrying cannot fix (TLS, 403, other 4xx, a bad body). Each
gateway keeps its own error classes and says which are retryable; this module only owns the
loop, so the attempt counting and the backoff schedule cannot drift apart between them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")
E = TypeVar("E", bound=Exception)


def retryable_http(status: int) -> bool:
    """429 and 5xx may heal on their own; any other status will not."""
    return status >= 500 or status == 429


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    errors: type[E],
    retryable: Callable[[E], bool],
    attempts: int,
    backoff: float,
    event: str,
) -> T:
    """Await `call()` up to `attempts` times, sleeping backoff, 2*backoff, 4*backoff... between
    tries. Only `errors` that `retryable` accepts are retried; the last one is re-raised.

    `event` names the warning logged before each retry (the gateway's, e.g. "bcv_fetch_retry"),
    with the attempt number, the error's outcome label and the delay: never the body or URL.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    attempt = 1
    while True:
        try:
            return await call()
        except errors as exc:
            if attempt >= attempts or not retryable(exc):
                raise
            delay = backoff * 2 ** (attempt - 1)
            log.warning(
                event, attempt=attempt, outcome=getattr(exc, "outcome", "error"), delay_s=delay
            )
            await asyncio.sleep(delay)
            attempt += 1
