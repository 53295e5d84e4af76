"""Operator commands for payments: trigger test events, inspect payments, dead letters, reconcile."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import click

from colmena.actors.payments_reconcile import ReconcileResult
from colmena.actors.payments_reconcile import reconcile_mercadopago as run_reconcile
from colmena.config import Settings, load_settings
from colmena.config.payments_settings import DEV_MERCADOPAGO_SECRET, DEV_STRIPE_SECRET
from colmena.gateways import mercadopago, stripe
from colmena.gateways import sample_events as events
from colmena.runtime.startup import amqp_resources, open_database
from colmena.store import payments as payment_store

STRIPE_TYPES = (
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "charge.refunded",
    "invoice.paid",
    "invoice.payment_failed",
    "customer.subscription.updated",
    "customer.subscription.deleted",
)
MERCADOPAGO_STATUSES = (
    "approved",
    "authorized",
    "pending",
    "in_process",
    "in_mediation",
    "rejected",
    "cancelled",
    "refunded",
    "charged_back",
)


def _ingress_url(settings: Settings, path: str) -> str:
    return f"http://{settings.http_host}:{settings.http_port}{path}"


def _post(
    url: str, body: bytes, headers: dict[str, str], params: dict[str, str] | None = None
) -> None:
    async def send() -> tuple[int, str]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
            async with session.post(url, data=body, headers=headers, params=params) as response:
                return response.status, await response.text()

    try:
        status, text = asyncio.run(send())
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise click.ClickException(
            f"cannot reach the ingress at {url}: {exc or type(exc).__name__}"
        ) from None
    click.echo(f"POST {url} -> {status} {text}")
    if status >= 300:
        raise click.ClickException(f"the ingress refused the event ({status})")


def _metadata(
    kind: str | None, rfc: str | None, tenant: str | None, plan: str | None, email: str
) -> dict[str, str]:
    metadata = {"email": email, "locale": "es-MX"}
    if kind == "license":
        metadata.update(
            product="colmena-enterprise", product_kind="license", edition="enterprise", seats="5"
        )
    if kind == "plan":
        metadata.update(
            product=f"plan-{plan}",
            product_kind="plan",
            plan=plan or "pro",
            tenant_id=tenant or "demo",
        )
    if rfc:
        metadata.update(
            rfc=rfc,
            fiscal_name="PUBLICO EN GENERAL",
            fiscal_regime="616",
            fiscal_postal_code="06600",
            cfdi_use="S01",
        )
    return metadata


def build_stripe_event(
    kind: str, *, payment_id: str | None, amount: int, currency: str, metadata: dict[str, str]
) -> dict[str, Any]:
    """A realistic event of `kind`; `payment_id` ties refunds and retries to an earlier payment."""
    intent_id = payment_id or events.new_id("pi")
    email = metadata["email"]
    if kind.startswith("payment_intent."):
        status = "succeeded" if kind.endswith("succeeded") else "requires_payment_method"
        obj = events.payment_intent(
            payment_intent_id=intent_id,
            amount=amount,
            currency=currency,
            status=status,
            email=email,
            metadata=metadata,
        )
    elif kind.startswith("checkout.session."):
        paid = "paid" if kind != "checkout.session.async_payment_failed" else "unpaid"
        obj = events.checkout_session(
            payment_intent_id=intent_id,
            amount=amount,
            currency=currency,
            payment_status=paid,
            email=email,
            metadata=metadata,
        )
    elif kind == "charge.refunded":
        obj = events.charge(
            payment_intent_id=intent_id, amount=amount, currency=currency, metadata=metadata
        )
    elif kind.startswith("invoice."):
        obj = events.invoice(
            subscription_id=payment_id or events.new_id("sub"),
            amount=amount,
            currency=currency,
            email=email,
            metadata=metadata,
            paid=kind == "invoice.paid",
        )
    else:
        status = "active" if kind.endswith("updated") else "canceled"
        obj = events.subscription(
            subscription_id=payment_id or events.new_id("sub"), status=status, metadata=metadata
        )
    return events.stripe_event(kind, obj)


@click.group("trigger")
def trigger() -> None:
    """Send a realistic, signed provider event to the running ingress (like `stripe trigger`)."""


@trigger.command("stripe")
@click.argument("event_type", type=click.Choice(STRIPE_TYPES))
@click.option(
    "--payment-id",
    help="PaymentIntent (or subscription) id to reuse, e.g. to refund an earlier one",
)
@click.option(
    "--amount", type=click.IntRange(min=0), default=150_000, show_default=True, help="minor units"
)
@click.option("--currency", default="mxn", show_default=True)
@click.option("--email", default="cliente@example.com", show_default=True)
@click.option(
    "--kind", type=click.Choice(["license", "plan"]), default="license", show_default=True
)
@click.option(
    "--plan", type=click.Choice(["free", "pro", "enterprise"]), default="pro", show_default=True
)
@click.option("--tenant", default="demo", show_default=True)
@click.option("--rfc", help="ask for a CFDI for this RFC")
@click.option("--url", help="ingress URL (default: COLMENA_HTTP_HOST/PORT)")
def trigger_stripe(
    event_type: str,
    payment_id: str | None,
    amount: int,
    currency: str,
    email: str,
    kind: str,
    plan: str,
    tenant: str,
    rfc: str | None,
    url: str | None,
) -> None:
    """Sign a Stripe EVENT_TYPE with the configured endpoint secret and post it."""
    settings = load_settings()
    secrets = settings.stripe_secrets()
    secret = secrets[0] if secrets else DEV_STRIPE_SECRET
    if not secrets:
        click.echo(
            "COLMENA_STRIPE_WEBHOOK_SECRETS is unset: signing with the `colmena dev` secret",
            err=True,
        )
    event = build_stripe_event(
        event_type,
        payment_id=payment_id,
        amount=amount,
        currency=currency.lower(),
        metadata=_metadata(kind, rfc, tenant, plan, email),
    )
    body = json.dumps(event)
    click.echo(
        f"event {event['id']} ({event_type}) for {event['data']['object'].get('payment_intent') or event['data']['object']['id']}"
    )
    _post(
        url or _ingress_url(settings, "/webhooks/stripe"),
        body.encode(),
        {"Content-Type": "application/json", "Stripe-Signature": stripe.sign(body, secret)},
    )


@trigger.command("mercadopago")
@click.argument("status", type=click.Choice(MERCADOPAGO_STATUSES))
@click.option(
    "--payment-id", default=lambda: str(uuid.uuid4().int % 10**10), help="Mercado Pago payment id"
)
@click.option("--url", help="ingress URL (default: COLMENA_HTTP_HOST/PORT)")
def trigger_mercadopago(status: str, payment_id: str, url: str | None) -> None:
    """Post a signed notification for PAYMENT_ID; the actor then fetches that payment's STATUS.

    Mercado Pago notifications carry only the id: the payments actor asks
    COLMENA_MERCADOPAGO_API_URL for the payment, so point it at your sandbox (or a stand-in)
    that answers with the status you want to see.
    """
    settings = load_settings()
    secrets = settings.mercadopago_secrets()
    secret = secrets[0] if secrets else DEV_MERCADOPAGO_SECRET
    if not secrets:
        click.echo(
            "COLMENA_MERCADOPAGO_WEBHOOK_SECRET is unset: signing with the `colmena dev` secret",
            err=True,
        )
    request_id = str(uuid.uuid4())
    notification = events.mercadopago_notification(payment_id)
    click.echo(
        f"notification {notification['id']} for payment {payment_id} (expected status: {status}); the actor "
        f"will fetch {settings.mercadopago_api_url}/v1/payments/{payment_id}"
    )
    _post(
        url or _ingress_url(settings, "/webhooks/mercadopago"),
        json.dumps(notification).encode(),
        {
            "Content-Type": "application/json",
            "x-request-id": request_id,
            "x-signature": mercadopago.sign(
                data_id=payment_id, request_id=request_id, secret=secret
            ),
        },
        params={"data.id": payment_id, "type": "payment"},
    )


def _payment_json(
    payment: payment_store.Payment, history: list[payment_store.PaymentEvent]
) -> dict[str, Any]:
    return {
        "provider": payment.provider,
        "id": payment.provider_payment_id,
        "status": payment.status,
        "amount": payment.amount_minor,
        "currency": payment.currency,
        "customer_email": payment.customer_email,
        "product": payment.product_ref,
        "product_kind": payment.product_kind,
        "tenant": payment.tenant_ref,
        "status_at": payment.status_at.isoformat(),
        "approved_at": payment.approved_at.isoformat() if payment.approved_at else None,
        "events": [
            {
                "source": e.source,
                "status": e.status,
                "provider_at": e.provider_at.isoformat(),
                "applied": e.applied,
                "reason": e.reason,
                "recorded_at": e.recorded_at.isoformat(),
            }
            for e in history
        ],
    }


@click.group("payments")
def payments_group() -> None:
    """Inspect payments and their event history."""


@payments_group.command("list")
@click.option("--status", help="only payments in this status")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def payments_list(status: str | None, limit: int, as_json: bool) -> None:
    """The most recent payments."""

    async def load() -> list[payment_store.Payment]:
        conn = await open_database(load_settings().require_database_url())
        try:
            return await payment_store.recent(conn, limit=limit, status=status)
        finally:
            await conn.close()

    found = asyncio.run(load())
    if as_json:
        click.echo(json.dumps([_payment_json(p, []) | {"events": None} for p in found], indent=2))
        return
    if not found:
        click.echo("no payments")
    for p in found:
        click.echo(
            f"{p.provider:<12} {p.provider_payment_id:<32} {p.status:<13} {p.amount_minor:>12} {p.currency}  "
            f"{p.customer_email or '-'}  {p.updated_at:%Y-%m-%d %H:%M:%S}"
        )


@payments_group.command("show")
@click.argument("provider", type=click.Choice(["stripe", "mercadopago"]))
@click.argument("payment_id")
@click.option("--json", "as_json", is_flag=True)
def payments_show(provider: str, payment_id: str, as_json: bool) -> None:
    """What happened to one payment (PaymentIntent id, Mercado Pago payment id, Stripe invoice id)."""

    async def load() -> tuple[payment_store.Payment | None, list[payment_store.PaymentEvent]]:
        conn = await open_database(load_settings().require_database_url())
        try:
            found = await payment_store.get_by_provider_id(conn, provider, payment_id)
            return found, (await payment_store.events(conn, found.id) if found else [])
        finally:
            await conn.close()

    payment, history = asyncio.run(load())
    if payment is None:
        raise click.ClickException(f"no {provider} payment {payment_id}")
    document = _payment_json(payment, history)
    if as_json:
        click.echo(json.dumps(document, indent=2))
        return
    for key in (
        "provider",
        "id",
        "status",
        "amount",
        "currency",
        "customer_email",
        "product",
        "tenant",
        "approved_at",
    ):
        click.echo(f"{key:>15}: {document[key]}")
    click.echo("         events:")
    for event in document["events"]:
        mark = "applied" if event["applied"] else f"ignored ({event['reason']})"
        click.echo(f"  {event['provider_at']}  {event['source']:<40} {event['status']:<13} {mark}")


_SINCE = re.compile(r"^(\d+)([mhd])$")


def parse_since(text: str) -> timedelta:
    match = _SINCE.match(text)
    if match is None:
        raise click.BadParameter(
            "use a number and m, h or d, e.g. 90m, 24h, 7d", param_hint="--since"
        )
    amount, unit = int(match.group(1)), match.group(2)
    return timedelta(**{{"m": "minutes", "h": "hours", "d": "days"}[unit]: amount})


@click.group("reconcile")
def reconcile() -> None:
    """Repair missed webhooks by asking the provider what happened."""


@reconcile.command("mercadopago")
@click.option(
    "--since", default="24h", show_default=True, help="how far back to look (90m, 24h, 7d)"
)
def reconcile_mercadopago(since: str) -> None:
    """Feed Mercado Pago payments colmena has not settled through the payments actor."""
    settings = load_settings()
    window = parse_since(since)
    result = asyncio.run(_reconcile(settings, since=datetime.now(UTC) - window))
    click.echo(
        f"checked {result.checked} payment(s); {result.queued} queued for settling, "
        f"{result.up_to_date} already up to date"
    )


async def _reconcile(settings: Settings, *, since: datetime) -> ReconcileResult:
    """The reconcile run with this command's own process resources, closed afterwards."""
    resources = amqp_resources(settings)
    try:
        return await run_reconcile(resources, since=since)
    finally:
        await resources.close()


COMMANDS = [trigger, payments_group, reconcile]
