"""Provider webhooks: verify on the raw bytes, commit to the inbox, then answer.

Rule 1 of DESIGN.md: 2xx only after the inbox row and its outbox message are committed; 503 when
PostgreSQL cannot be reached (providers retry); RabbitMQ being down changes nothing here, the
relay publishes later. Rule 2: a failed check is a 401, a counter and a security log line, and
nothing is stored. An event is keyed by signed values only (Stripe's signed event id, Mercado
Pago's signed manifest), so replayed headers with another body are the same event. Bodies and
secrets are never logged.

Mercado Pago's IPN (`?topic=payment&id=...`, no signature) is taken as a hint only: nothing of
the request but its topic and numeric id is kept, the actor fetches the resource from the API
(the authoritative state), and two limits keep strangers from driving those fetches: one stored
hint per id per window (`store.payment_hints`), and a global budget of hints per minute, beyond
which the answer is 429 (Mercado Pago retries later; the payment's signed webhook and the
reconciliation job do not depend on hints).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from colmena.config.metrics import SECURITY_EVENTS, WEBHOOKS
from colmena.gateways import mercadopago, stripe
from colmena.http.context import RESOURCES, SETTINGS
from colmena.http.errors import ApiError
from colmena.http.middlewares import client_ip, record_failed_auth
from colmena.http.publishing import publish_in_background
from colmena.store import inbox, payment_hints

log = structlog.get_logger(__name__)

DB_TIMEOUT_S = 5.0
IPN_TOPICS = ("payment", "merchant_order")
# Mercado Pago's payment and merchant order ids are integers.
_IPN_ID = re.compile(r"[0-9]{1,20}")
# TargetServerAttributeNotMatched: every host of a multi-host URL answered, none is writable
# (a failover under way, or a primary fenced read-only).
DATABASE_DOWN = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.TargetServerAttributeNotMatched,
    asyncio.TimeoutError,
)


def reject_webhook(
    request: web.Request, provider: str, status: int, outcome: str, message: str, reason: str
) -> ApiError:
    """Count and log a refused webhook as a security event; the caller raises what it returns."""
    WEBHOOKS.labels(provider=provider, outcome=outcome).inc()
    SECURITY_EVENTS.labels(reason=f"webhook_{outcome}").inc()
    log.warning(
        "security: webhook rejected",
        provider=provider,
        outcome=outcome,
        reason=reason,
        client=client_ip(request),
    )
    return ApiError(status, outcome, message)


async def webhook_body(request: web.Request, provider: str) -> bytes:
    if request.content_type != "application/json":
        raise reject_webhook(
            request,
            provider,
            415,
            "unsupported_media_type",
            "send application/json",
            request.content_type,
        )
    return await request.read()


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # an unpaired surrogate, from a "\ud800" escape
        return False
    return True


def _jsonb_storable(value: Any) -> bool:
    """Whether PostgreSQL's jsonb can hold a parsed body: it refuses NaN and Infinity, and the
    NUL character and unpaired surrogates in any string or key."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return "\x00" not in value and _is_utf8(value)
    if isinstance(value, list):
        return all(_jsonb_storable(item) for item in value)
    if isinstance(value, dict):
        return all(_jsonb_storable(key) and _jsonb_storable(item) for key, item in value.items())
    return True


async def store_event(
    request: web.Request,
    *,
    provider: str,
    event_key: str,
    kind: str,
    payload: dict[str, Any],
    actor: str,
    budget_per_minute: int | None = None,
) -> web.Response:
    """Commit the event and its message; with a budget, refuse (429) once that many events of
    its kind arrived in the last minute (a soft bound: concurrent requests may pass it by a few)."""
    try:
        storable = _jsonb_storable(payload)
    except RecursionError:
        storable = False
    if not storable:  # a 503 would have the provider send it again forever; it can never be stored
        raise reject_webhook(
            request,
            provider,
            400,
            "malformed",
            "the event holds values that cannot be stored",
            "not storable as jsonb",
        )
    resources = request.app[RESOURCES]
    try:
        async with asyncio.timeout(DB_TIMEOUT_S):
            async with resources.pool.acquire() as conn:
                if budget_per_minute is not None:
                    recent = await payment_hints.recent_count(conn, seconds=60)
                    if recent >= budget_per_minute:
                        raise _over_budget(provider)
                new, row = await inbox.record_with_message(
                    conn,
                    provider=provider,
                    event_key=event_key,
                    kind=kind,
                    payload=payload,
                    queue="payments",
                    actor=actor,
                )
    except DATABASE_DOWN as exc:
        WEBHOOKS.labels(provider=provider, outcome="unavailable").inc()
        log.error(
            "webhook not stored: database unavailable", provider=provider, error=type(exc).__name__
        )
        raise ApiError(
            503,
            "unavailable",
            "cannot store the event now; retry later",
            headers={"Retry-After": "30"},
        ) from None
    if row is not None:
        publish_in_background(request.app, [row])
    outcome = "accepted" if new else "duplicate"
    WEBHOOKS.labels(provider=provider, outcome=outcome).inc()
    log.debug(
        "webhook stored", provider=provider, kind=kind, event_key=event_key, duplicate=not new
    )
    return web.json_response({"received": True, "duplicate": not new})


def _over_budget(provider: str) -> ApiError:
    WEBHOOKS.labels(provider=provider, outcome="over_budget").inc()
    log.warning("unsigned hints over budget: refused for now", provider=provider)
    return ApiError(
        429, "over_budget", "too many notifications; retry later", headers={"Retry-After": "60"}
    )


async def stripe_webhook(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    secrets = settings.stripe_secrets()
    if not secrets:
        WEBHOOKS.labels(provider="stripe", outcome="not_configured").inc()
        raise ApiError(503, "not_configured", "Stripe webhooks are not configured")
    body = await webhook_body(request, "stripe")
    try:
        stripe.verify_signature(
            body,
            request.headers.get("Stripe-Signature"),
            secrets,
            tolerance_s=settings.stripe_tolerance_s,
        )
    except stripe.StripeSignatureError as exc:
        await record_failed_auth(request)
        raise reject_webhook(
            request, "stripe", 401, "invalid_signature", "signature verification failed", str(exc)
        ) from None
    try:
        event = stripe.parse_event(body)
    except stripe.StripeEventError as exc:
        raise reject_webhook(request, "stripe", 400, "malformed", str(exc), str(exc)) from None
    return await store_event(
        request,
        provider="stripe",
        event_key=event["id"],
        kind=event["type"],
        payload=event,
        actor="settle_stripe_thin_event" if stripe.is_thin(event) else "settle_stripe_event",
    )


def _mercadopago_notification(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python parses
        raise ValueError("body is not JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
        raise ValueError("notification has no data object")
    if not isinstance(payload.get("type"), str) or not payload["type"]:
        raise ValueError("notification has no type")
    return payload


def _is_hint(request: web.Request) -> bool:
    """An IPN: unsigned, naming a topic. A signed notification always takes the signed path."""
    settings = request.app[SETTINGS]
    return (
        settings.mercadopago_ipn_enabled
        and "x-signature" not in request.headers
        and "topic" in request.query
    )


async def mercadopago_hint(request: web.Request) -> web.Response:
    """Store an IPN as a hint: its topic and id, nothing of the body, which nobody signed."""
    settings = request.app[SETTINGS]
    if settings.mercadopago_access_token is None:
        WEBHOOKS.labels(provider="mercadopago", outcome="not_configured").inc()
        raise ApiError(503, "not_configured", "Mercado Pago API access is not configured")
    topic, resource_id = request.query.get("topic", ""), request.query.get("id", "")
    if topic not in IPN_TOPICS:
        # Other topics (chargebacks, point integrations) carry nothing colmena acts on.
        WEBHOOKS.labels(provider="mercadopago", outcome="ignored").inc()
        return web.json_response({"received": True, "ignored": "topic not handled"})
    if not _IPN_ID.fullmatch(resource_id):
        raise reject_webhook(
            request, "mercadopago", 400, "malformed", "id must be a number", "IPN id not numeric"
        )
    return await store_event(
        request,
        provider="mercadopago",
        event_key=payment_hints.hint_key(
            topic, resource_id, now_s=time.time(), window_s=settings.mercadopago_ipn_window_s
        ),
        kind=topic,
        payload={"type": topic, "data": {"id": resource_id}, "hint": "ipn"},
        actor="settle_mercadopago_notification",
        budget_per_minute=settings.mercadopago_ipn_budget_per_minute,
    )


async def mercadopago_webhook(request: web.Request) -> web.Response:
    if _is_hint(request):
        return await mercadopago_hint(request)
    settings = request.app[SETTINGS]
    secrets = settings.mercadopago_secrets()
    if not secrets:
        WEBHOOKS.labels(provider="mercadopago", outcome="not_configured").inc()
        raise ApiError(503, "not_configured", "Mercado Pago webhooks are not configured")
    body = await webhook_body(request, "mercadopago")
    data_id = request.query.get("data.id")
    try:
        signed = mercadopago.verify_signature(
            x_signature=request.headers.get("x-signature"),
            x_request_id=request.headers.get("x-request-id"),
            data_id=data_id,
            secrets=secrets,
            tolerance_s=settings.mercadopago_tolerance_s,
        )
    except mercadopago.MercadoPagoSignatureError as exc:
        await record_failed_auth(request)
        raise reject_webhook(
            request,
            "mercadopago",
            401,
            "invalid_signature",
            "signature verification failed",
            exc.reason,
        ) from None
    try:
        payload = _mercadopago_notification(body)
    except ValueError as exc:
        raise reject_webhook(request, "mercadopago", 400, "malformed", str(exc), str(exc)) from None
    body_id = payload["data"].get("id")
    if not data_id or body_id is None or str(body_id) not in (data_id, data_id.lower()):
        raise reject_webhook(
            request,
            "mercadopago",
            400,
            "data_id_mismatch",
            "data.id in the query string must be present and match the body",
            "data.id mismatch",
        )
    # The body is not signed: its own `id` would let a replay of the signed headers with another
    # body store a new event (and cost a payments-API call) each time.
    return await store_event(
        request,
        provider="mercadopago",
        event_key=signed.manifest,
        kind=payload["type"],
        payload=payload,
        actor="settle_mercadopago_notification",
    )


def setup(app: web.Application) -> None:
    app.router.add_post("/webhooks/stripe", stripe_webhook)
    app.router.add_post("/webhooks/mercadopago", mercadopago_webhook)
