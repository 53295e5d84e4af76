"""Tenant notifications (queue "notifications"): one attempt per message, turns per tenant.

Actor `deliver_notification(delivery_id)`: lease the delivery (colmena.store.notifications.claim)
if its tenant has fewer than COLMENA_NOTIFY_TENANT_CONCURRENCY in flight, send it once (Telegram
`sendMessage`, or a signed webhook), then record the outcome and hand the freed slot to the
tenant's next due deliveries in one transaction. A delivery whose tenant is at its limit returns
at once, leaving the row waiting for its turn: a worker thread is held only for one real attempt,
bounded by COLMENA_NOTIFY_TIMEOUT_S, so a tenant whose endpoint hangs holds at most its limit of
threads and every other tenant's deliveries go on.

Retries are the delivery row's, not Dramatiq's: a failed attempt sets the next attempt's time
(jittered exponential backoff, or Telegram's `retry_after`), and the `notifications-dispatch`
job puts due rows back on the queue every second. After COLMENA_NOTIFY_MAX_ATTEMPTS, or a
refusal retrying cannot change (Telegram 400/403, a destination the SSRF rule refuses), the
delivery is dead: counted in colmena_notification_deliveries_total{outcome="dead"}, listed by
the tenant API and `colmena notifications list`, replayable by both.

A webhook's secret is sealed to this side's X25519 key (COLMENA_KEY_SEAL_PRIVATE_KEY, as on the
bots workers); it is opened for each attempt and goes nowhere but the HMAC.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from dataclasses import dataclass
from typing import Literal

import structlog
from apscheduler.triggers.interval import IntervalTrigger

from colmena.config import Settings, SettingsError
from colmena.config.metrics import NOTIFICATION_DELIVERIES
from colmena.domain.key_sealing import SealError, open_sealed
from colmena.domain.notifications import SECRET_SEAL_LABEL, chat_for_api, telegram_text
from colmena.errors import PermanentError
from colmena.gateways import telegram, tenant_webhooks
from colmena.gateways.retry import Uniform, backoff_delay
from colmena.gateways.tenant_webhooks import Attempt
from colmena.runtime.outbox import publish_now
from colmena.runtime.registry import actor
from colmena.runtime.resources import Resources
from colmena.runtime.scheduler import scheduled
from colmena.store import notifications as store
from colmena.supervisor.keys import seal_private_key

log = structlog.get_logger(__name__)

LEASE_MARGIN_S = 30.0
MAX_RETRY_AFTER_S = 3600.0
DISPATCH_TICK_S = 1


@dataclass(frozen=True)
class Verdict:
    outcome: Literal["delivered", "retry", "dead"]
    retry_in_s: float = 0.0


def judge(
    attempt: Attempt,
    attempts: int,
    *,
    max_attempts: int,
    backoff_s: float,
    max_backoff_s: float,
    uniform: Uniform = random.uniform,
) -> Verdict:
    """What follows an attempt: delivered, dead (final refusal or the last attempt), or a retry
    after Telegram's `retry_after` (up to an hour, whatever the backoff's cap) or the jittered
    exponential backoff of gateways.retry."""
    if attempt.ok:
        return Verdict("delivered")
    if attempt.permanent or attempts >= max_attempts:
        return Verdict("dead")
    if attempt.retry_after_s is not None:
        # The API said when; coming back sooner only costs another refusal.
        return Verdict("retry", min(max(attempt.retry_after_s, 0.0), MAX_RETRY_AFTER_S))
    delay = backoff_delay(
        attempts - 1, backoff=backoff_s, max_backoff=max_backoff_s, uniform=uniform
    )
    return Verdict("retry", delay)


def lease_seconds(settings: Settings) -> float:
    """How long a claimed delivery is a worker's: its attempt's time and a margin."""
    return settings.notify_timeout_s + LEASE_MARGIN_S


async def _send_telegram(
    resources: Resources, claimed: store.Claimed, endpoint: store.Endpoint
) -> Attempt:
    settings = resources.settings
    if settings.telegram_bot_token is None:
        return Attempt(False, error="COLMENA_TELEGRAM_BOT_TOKEN is not set")
    return await telegram.send_message(
        resources.shared(telegram.TELEGRAM_SESSION),
        base_url=settings.telegram_api_url,
        token=settings.telegram_bot_token.get_secret_value(),
        chat_id=chat_for_api(endpoint.target),
        text=telegram_text(claimed.event_kind, claimed.tenant_id, claimed.event_data),
    )


async def _send_webhook(
    resources: Resources, claimed: store.Claimed, endpoint: store.Endpoint
) -> Attempt:
    settings = resources.settings
    if endpoint.sealed_secret is None:
        return Attempt(False, error="the webhook has no signing secret", permanent=True)
    try:
        secret = open_sealed(
            seal_private_key(settings),
            endpoint.sealed_secret,
            tenant_id=claimed.tenant_id,
            provider=SECRET_SEAL_LABEL,
        )
    except SettingsError as exc:
        return Attempt(False, error=str(exc))
    except SealError:
        log.error("security: a webhook secret does not open with this side's key")
        return Attempt(False, error="the signing secret does not open", permanent=True)
    body = json.dumps(
        tenant_webhooks.payload(
            event_id=str(claimed.event_id),
            kind=claimed.event_kind,
            tenant_id=claimed.tenant_id,
            occurred_at=claimed.occurred_at.isoformat(),
            data=claimed.event_data,
        ),
        separators=(",", ":"),
    ).encode()
    return await tenant_webhooks.send(
        resources.shared(tenant_webhooks.WEBHOOK_SESSION),
        endpoint.target,
        secret=secret,
        msg_id=str(claimed.id),
        timestamp=int(time.time()),
        body=body,
        allowed=settings.notify_networks(),
    )


async def _attempt(resources: Resources, claimed: store.Claimed) -> Attempt:
    endpoint = claimed.endpoint
    if endpoint is None:
        return Attempt(False, error="endpoint removed", permanent=True)
    if claimed.channel == "telegram":
        return await _send_telegram(resources, claimed, endpoint)
    return await _send_webhook(resources, claimed, endpoint)


@actor(queue=store.QUEUE, name=store.DELIVER_ACTOR)
async def deliver_notification(resources: Resources, delivery_id: str) -> None:
    """Make one attempt at a delivery, if it is due and its tenant has a free slot."""
    settings = resources.settings
    try:
        key = uuid.UUID(delivery_id)
    except (TypeError, ValueError):
        raise PermanentError(f"delivery id is not a UUID: {delivery_id!r}") from None
    limit = settings.notify_tenant_concurrency
    async with resources.pool.acquire() as conn, conn.transaction():
        claimed = await store.claim(conn, key, limit=limit, lease_s=lease_seconds(settings))
    if claimed is None:
        log.debug("notification not due or already handled", delivery_id=delivery_id)
        return
    if claimed == "busy":
        NOTIFICATION_DELIVERIES.labels(channel="any", outcome="busy").inc()
        log.info("notification waits its turn: tenant at its limit", delivery_id=delivery_id)
        return
    with structlog.contextvars.bound_contextvars(
        tenant_id=claimed.tenant_id, delivery_id=delivery_id, channel=claimed.channel
    ):
        attempt = await _attempt(resources, claimed)
        verdict = judge(
            attempt,
            claimed.attempts,
            max_attempts=settings.notify_max_attempts,
            backoff_s=settings.notify_backoff_s,
            max_backoff_s=settings.notify_max_backoff_s,
        )
        async with resources.pool.acquire() as conn, conn.transaction():
            follow = await store.finish(
                conn,
                claimed,
                verdict.outcome,
                limit=limit,
                retry_in_s=verdict.retry_in_s,
                error=attempt.error,
                status=attempt.status,
            )
        NOTIFICATION_DELIVERIES.labels(channel=claimed.channel, outcome=verdict.outcome).inc()
        fields = {
            "kind": claimed.event_kind,
            "attempt": claimed.attempts,
            "status": attempt.status,
            "error": attempt.error,
        }
        if verdict.outcome == "delivered":
            log.info("notification delivered", **fields)
        elif verdict.outcome == "retry":
            log.warning(
                "notification attempt failed", retry_in_s=round(verdict.retry_in_s, 3), **fields
            )
        else:
            log.error("notification dead: replay it once the endpoint works", **fields)
    await publish_now(resources.pool, resources.publisher, follow)


async def dispatch(resources: Resources) -> int:
    """Put every due delivery with no message on the queue back on it; returns how many."""
    settings = resources.settings
    async with resources.pool.acquire() as conn, conn.transaction():
        rows = await store.dispatch_due(
            conn,
            limit=settings.notify_tenant_concurrency,
            stale_s=2 * lease_seconds(settings),
        )
    await publish_now(resources.pool, resources.publisher, rows)
    return len(rows)


@scheduled("notifications-trim", IntervalTrigger(hours=1))
async def trim_tick(resources: Resources) -> None:
    """Events and their deliveries are kept COLMENA_NOTIFY_KEEP_DAYS once finished."""
    async with resources.pool.acquire() as conn:
        removed = await store.trim(conn, keep_days=resources.settings.notify_keep_days)
    if removed:
        log.info("old notification events removed", count=removed)


@scheduled("notifications-dispatch", IntervalTrigger(seconds=DISPATCH_TICK_S))
async def dispatch_tick(resources: Resources) -> None:
    """Retries whose time came, turns a lost message left waiting, lapsed leases."""
    sent = await dispatch(resources)
    if sent:
        log.info("notifications dispatched", count=sent)
