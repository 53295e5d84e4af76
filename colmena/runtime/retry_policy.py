"""What becomes of a message whose actor raised: retried after a backoff, or dead-lettered.

The rules are those of Dramatiq's `Retries` middleware, read from the broker's own instance of
it and from the same actor and message options, so the loop worker and Dramatiq's threads
(`colmena dev`, tests) retry and give up alike: an actor's `throws` gives up at once; otherwise
`retry_when` (colmena's: fewer than COLMENA_MAX_RETRIES retries and not a PermanentError) or
`max_retries` decides, and the delay is `compute_backoff` (exponential, with jitter) unless a
`dramatiq.Retry` names one. Like the middleware, it records the attempt in the message's
options (`retries`, `traceback`, `requeue_timestamp`), which travel with the retried copy.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.common import compute_backoff
from dramatiq.errors import Retry
from dramatiq.middleware import Retries
from dramatiq.middleware.retries import DEFAULT_MAX_BACKOFF

TRACEBACK_LIMIT = 30


@dataclass(frozen=True)
class RetryLater:
    """Put a copy back on the delay queue, due `delay_ms` from now."""

    delay_ms: int


@dataclass(frozen=True)
class GiveUp:
    """Dead-letter the message. `exhausted` is False when the actor's `throws` matched;
    `notify` names the `on_retry_exhausted` actor to tell, if any."""

    exhausted: bool
    notify: str | None = None
    retries: int = 0
    max_retries: int | None = None


def after_failure(
    message: dramatiq.Message[Any],
    actor: dramatiq.Actor[Any, Any],
    retries: Retries,
    exception: BaseException,
    now_ms: int,
) -> RetryLater | GiveUp:
    """Decide, recording the attempt in `message.options` as `Retries` does."""
    options = message.options
    throws = options.get("throws") or actor.options.get("throws")
    if throws and isinstance(exception, throws):
        return GiveUp(exhausted=False)

    attempts = options.setdefault("retries", 0)
    options["retries"] += 1
    options["traceback"] = "".join(traceback.format_exception(exception, limit=TRACEBACK_LIMIT))
    options["requeue_timestamp"] = now_ms

    max_retries = options.get("max_retries", actor.options.get("max_retries", retries.max_retries))
    retry_when = actor.options.get("retry_when", retries.retry_when)
    if retry_when is not None:
        exhausted = not retry_when(attempts, exception)
    else:
        exhausted = max_retries is not None and attempts >= max_retries
    if exhausted:
        notify = options.get("on_retry_exhausted") or actor.options.get("on_retry_exhausted")
        return GiveUp(exhausted=True, notify=notify, retries=attempts, max_retries=max_retries)

    if isinstance(exception, Retry) and exception.delay is not None:
        return RetryLater(exception.delay)
    min_backoff = options.get("min_backoff", actor.options.get("min_backoff", retries.min_backoff))
    max_backoff = options.get("max_backoff", actor.options.get("max_backoff", retries.max_backoff))
    _, delay = compute_backoff(
        attempts, factor=min_backoff, max_backoff=min(max_backoff, DEFAULT_MAX_BACKOFF)
    )
    return RetryLater(delay)
