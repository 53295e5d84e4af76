"""Operator commands for payments: trigger test events, inspect payments, and the Mercado Pago
repair that `colmena reconcile mercadopago` runs (`colmena.cli.reconcile`)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import click

from colmena.actors.payments_reconcile import ReconcileResult
from colmena.actors.payments_reconcile import reconcile_mercadopago as run_reconcile
from colmena.config import Settings, load_settings
from colmena.config.dev_stack import (
    SAMPLE_PRODUCT,
    DevStack,
    load_operator_settings,
    operator_settings,
)
from colmena.config.payments_settings import DEV_MERCADOPAGO_SECRET, DEV_STRIPE_SECRET
from colmena.domain.money import format_minor, format_money, from_minor
from colmena.gateways import bitso_webhooks, mercadopago, stripe
from colmena.gateways import sample_events as events
from colmena.runtime.startup import open_database, operator_resources
from colmena.sandbox.serving import with_sandboxes
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


def _webhook_url(url: str | None, settings: Settings, stack: DevStack | None, path: str) -> str:
    """Where to post: `--url` as given when it names the webhook, else as the ingress's base URL
    (`http://host:8080`); by default the running `colmena dev`'s ingress, else
    COLMENA_HTTP_HOST/PORT."""
    if url is not None:
        return url if "/webhooks/" in url else url.rstrip("/") + path
    if stack is not None:
        return stack.ingress_url + path
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
    kind: str | None,
    rfc: str | None,
    tenant: str | None,
    plan: str | None,
    email: str,
    product: str = SAMPLE_PRODUCT,
) -> dict[str, str]:
    metadata = {"email": email, "locale": "es-MX"}
    if kind == "license":
        metadata.update(product=product, product_kind="license", edition="enterprise", seats="5")
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


BUYER_OPTIONS = (
    click.option("--email", default="cliente@example.com", show_default=True),
    click.option(
        "--kind", type=click.Choice(["license", "plan"]), default="license", show_default=True
    ),
    click.option(
        "--plan", type=click.Choice(["free", "pro", "enterprise"]), default="pro", show_default=True
    ),
    click.option("--tenant", default="demo", show_default=True),
    click.option("--rfc", help="ask for a CFDI for this RFC"),
    click.option(
        "--url",
        help="the ingress's base URL or the webhook's URL "
        "(default: the running `colmena dev`'s, else COLMENA_HTTP_HOST/PORT)",
    ),
)


def what_is_bought(command: Callable[..., None]) -> Callable[..., None]:
    """The options every trigger shares: who buys what, and where the event is posted."""
    for option in reversed(BUYER_OPTIONS):
        command = option(command)
    return command


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
@what_is_bought
@click.option(
    "--product",
    default=SAMPLE_PRODUCT,
    show_default=True,
    help="license product (a directory under COLMENA_LICENSE_PRODUCTS_DIR)",
)
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
    product: str,
    url: str | None,
) -> None:
    """Sign a Stripe EVENT_TYPE with the configured endpoint secret and post it."""
    settings, stack = operator_settings(load_settings())
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
        metadata=_metadata(kind, rfc, tenant, plan, email, product),
    )
    body = json.dumps(event)
    obj = event["data"]["object"]
    click.echo(f"event {event['id']} ({event_type}) for {obj.get('payment_intent') or obj['id']}")
    _post(
        _webhook_url(url, settings, stack, "/webhooks/stripe"),
        body.encode(),
        {"Content-Type": "application/json", "Stripe-Signature": stripe.sign(body, secret)},
    )


_AMOUNT = re.compile(r"^\d{1,10}(\.\d{1,2})?$")


def _amount(_ctx: click.Context, _param: click.Parameter, value: str) -> Decimal:
    if not _AMOUNT.match(value) or Decimal(value) <= 0:
        raise click.BadParameter("a positive decimal amount with at most 2 decimals, e.g. 1500.00")
    return Decimal(value)


def _api_source(settings: Settings, stack: DevStack | None) -> str:
    """Where the running server's payments actor fetches a payment: said without guessing."""
    if stack is not None:
        return (
            "the Mercado Pago API the running `colmena dev` is configured with "
            "(its COLMENA_MERCADOPAGO_ACCESS_TOKEN is set, so it serves no sandbox)"
        )
    if "mercadopago_api_url" in settings.model_fields_set:
        return f"{settings.mercadopago_api_url} (COLMENA_MERCADOPAGO_API_URL)"
    return f"{settings.mercadopago_api_url} (COLMENA_MERCADOPAGO_API_URL is unset)"


def _sandbox_payment(
    settings: Settings, api_url: str, status: str, payment_id: str | None, **order: Any
) -> dict[str, Any]:
    """Make (or, with `payment_id`, change) the sandbox payment the notification will name."""
    client = mercadopago.MercadoPagoClient(
        access_token=mercadopago.SANDBOX_ACCESS_TOKEN,
        base_url=api_url,
        timeout_s=settings.mercadopago_timeout_s,
    )
    if payment_id is not None and status not in mercadopago.TEST_CHANGES:
        raise click.ClickException(
            "against the sandbox --payment-id takes "
            f"{' or '.join(mercadopago.TEST_CHANGES)}: a payment's outcome is decided when it "
            "is made, so leave --payment-id out to make a new one"
        )
    if status not in mercadopago.TEST_STATUSES:
        raise click.ClickException(
            f"Mercado Pago's API cannot make a payment {status} (a buyer's dispute does); the "
            f"sandbox makes {', '.join(mercadopago.TEST_STATUSES)}"
        )
    try:
        if payment_id is not None:
            return mercadopago.change_test_payment(client, payment_id, status)
        return mercadopago.create_test_payment(client, status, **order)
    except mercadopago.MercadoPagoError as exc:
        raise click.ClickException(
            f"the Mercado Pago sandbox at {api_url} refused: {exc}"
        ) from None


@trigger.command("mercadopago")
@click.argument("status", type=click.Choice(MERCADOPAGO_STATUSES))
@click.option(
    "--payment-id",
    help="against dev's sandbox: an earlier payment to refund or cancel; otherwise the payment "
    "to notify (default: a new one)",
)
@click.option(
    "--amount", default="1500.00", show_default=True, callback=_amount, help="sandbox: MXN"
)
@what_is_bought
def trigger_mercadopago(
    status: str,
    payment_id: str | None,
    amount: Decimal,
    email: str,
    kind: str,
    plan: str,
    tenant: str,
    rfc: str | None,
    url: str | None,
) -> None:
    """Post a signed notification for a payment in STATUS; the actor then fetches the payment.

    Mercado Pago notifications carry only the id: the payments actor asks the API for the
    payment. Against a running `colmena dev` that serves the Mercado Pago sandbox, the payment
    is first made there (a test card whose holder name gives STATUS), so it settles end to end.
    Otherwise only the notification is sent, for PAYMENT_ID: the API the server is configured
    with (COLMENA_MERCADOPAGO_API_URL) must answer for it.
    """
    settings, stack = operator_settings(load_settings())
    secrets = settings.mercadopago_secrets()
    secret = secrets[0] if secrets else DEV_MERCADOPAGO_SECRET
    if not secrets:
        click.echo(
            "COLMENA_MERCADOPAGO_WEBHOOK_SECRET is unset: signing with the `colmena dev` secret",
            err=True,
        )
    sandbox = stack.sandboxes.get("mercadopago") if stack is not None else None
    if sandbox is not None:
        metadata = _metadata(kind, rfc, tenant, plan, email)
        payment = _sandbox_payment(
            settings,
            sandbox,
            status,
            payment_id,
            amount=amount,
            email=email,
            description=metadata.get("product", "Colmena"),
            metadata=metadata,
        )
        payment_id = str(payment["id"])
        paid = format_money(Decimal(str(payment["transaction_amount"])), payment["currency_id"])
        click.echo(
            f"sandbox payment {payment_id}: {payment['status']} ({payment['status_detail']}), "
            f"{paid}"
        )
        api = f"{sandbox} (the sandbox of the running `colmena dev`)"
    else:
        payment_id = payment_id or str(uuid.uuid4().int % 10**10)
        api = _api_source(settings, stack)
    click.echo(f"Mercado Pago API: {api}")
    request_id = str(uuid.uuid4())
    notification = events.mercadopago_notification(payment_id)
    click.echo(
        f"notification {notification['id']} for payment {payment_id} (expected status: "
        f"{status}); the payments actor fetches GET /v1/payments/{payment_id}"
    )
    _post(
        _webhook_url(url, settings, stack, "/webhooks/mercadopago"),
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


BITSO_STATUSES = {
    "payment_intent": ("CREATED", "PENDING", "PROCESSING", "COMPLETED", "FAILED", "EXPIRED"),
    "funding": ("pending", "complete", "failed"),
}


def build_bitso_event(
    event: str, status: str, *, resource_id: str | None, order_id: str | None, amount: Decimal
) -> dict[str, Any]:
    """A Bitso delivery body: a payment intent whose `external_ref` is the order id, or a SPEI
    deposit whose `concepto` carries it."""
    if status not in BITSO_STATUSES[event]:
        raise click.BadParameter(
            f"{event} statuses are {', '.join(BITSO_STATUSES[event])}", param_hint="STATUS"
        )
    if event == "payment_intent":
        return events.bitso_payment_intent(
            intent_id=resource_id, status=status, amount=float(amount), external_ref=order_id
        )
    return events.bitso_funding(
        fid=resource_id, status=status, amount=f"{amount:.2f}", concepto=order_id or "PAGO"
    )


@trigger.command("bitso")
@click.argument("event", type=click.Choice(sorted(BITSO_STATUSES)))
@click.argument("status")
@click.option("--id", "resource_id", help="payment intent id or deposit fid (default: a new one)")
@click.option(
    "--order-id",
    help="the colmena order: the intent's external_ref, or the deposit's concepto reference",
)
@click.option("--amount", default="1500.00", show_default=True, callback=_amount, help="MXN")
@click.option(
    "--url",
    help="the ingress's base URL or the webhook's URL "
    "(default: the running `colmena dev`'s, else COLMENA_HTTP_HOST/PORT)",
)
def trigger_bitso(
    event: str,
    status: str,
    resource_id: str | None,
    order_id: str | None,
    amount: Decimal,
    url: str | None,
) -> None:
    """Post a signed Bitso EVENT (payment_intent or funding) in STATUS.

    Signed with the development key under COLMENA_DATA_DIR (the one `colmena dev` verifies
    with): nobody but Bitso holds Bitso's private keys, so an ingress configured with Bitso's
    public keys only refuses it, unless COLMENA_BITSO_WEBHOOK_PUBLIC_KEYS also lists this key.
    """
    settings, stack = operator_settings(load_settings())
    body = build_bitso_event(
        event, status, resource_id=resource_id, order_id=order_id, amount=amount
    )
    private_key = bitso_webhooks.dev_signing_key(settings.data_dir)
    configured = settings.bitso_webhook_public_keys
    key_text = bitso_webhooks.public_key_text(private_key)
    if not configured:
        click.echo(
            "COLMENA_BITSO_WEBHOOK_PUBLIC_KEYS is unset: signing with the `colmena dev` key",
            err=True,
        )
    elif configured.get(bitso_webhooks.DEV_KEY_ID) != key_text:
        click.echo(
            f"COLMENA_BITSO_WEBHOOK_PUBLIC_KEYS does not list the dev key "
            f"{bitso_webhooks.DEV_KEY_ID!r}: an ingress with these settings refuses this "
            f"delivery (its public key: {key_text})",
            err=True,
        )
    payload = body["payload"]
    click.echo(f"{event} {payload.get('id') or payload.get('fid')} ({status})")
    _post(
        _webhook_url(url, settings, stack, "/webhooks/bitso"),
        json.dumps(body).encode(),
        {
            "Content-Type": "application/json",
            bitso_webhooks.SIGNATURE_HEADER: bitso_webhooks.sign(payload, private_key),
            bitso_webhooks.KEY_ID_HEADER: bitso_webhooks.DEV_KEY_ID,
        },
    )


def _payment_json(
    payment: payment_store.Payment, history: list[payment_store.PaymentEvent]
) -> dict[str, Any]:
    return {
        "provider": payment.provider,
        "id": payment.provider_payment_id,
        "status": payment.status,
        "amount": str(from_minor(payment.amount_minor, payment.currency)),
        "amount_minor": payment.amount_minor,
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
        conn = await open_database(load_operator_settings().require_database_url())
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
            f"{p.provider:<12} {p.provider_payment_id:<32} {p.status:<13} "
            f"{format_minor(p.amount_minor, p.currency):>18}  "
            f"{p.customer_email or '-'}  {p.updated_at:%Y-%m-%d %H:%M:%S}"
        )


@payments_group.command("show")
@click.argument("provider", type=click.Choice(["stripe", "mercadopago", "bitso"]))
@click.argument("payment_id")
@click.option("--json", "as_json", is_flag=True)
def payments_show(provider: str, payment_id: str, as_json: bool) -> None:
    """What happened to one payment (PaymentIntent id, Mercado Pago payment id, Stripe invoice
    id, Bitso payment intent id or deposit fid)."""

    async def load() -> tuple[payment_store.Payment | None, list[payment_store.PaymentEvent]]:
        conn = await open_database(load_operator_settings().require_database_url())
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
    shown = document | {"amount": format_minor(payment.amount_minor, payment.currency)}
    for key in (
        "provider",
        "id",
        "status",
        "amount",
        "customer_email",
        "product",
        "tenant",
        "approved_at",
    ):
        click.echo(f"{key:>15}: {shown[key]}")
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


@click.command("mercadopago")
@click.option(
    "--since", default="24h", show_default=True, help="how far back to look (90m, 24h, 7d)"
)
def reconcile_mercadopago(since: str) -> None:
    """Feed Mercado Pago payments colmena has not settled through the payments actor.

    Against a running `colmena dev` it searches that dev's Mercado Pago sandbox (when it serves
    one) and leaves what it queues to the dev process's relay."""
    settings, stack = operator_settings(load_settings())
    if stack is not None and "mercadopago" in stack.sandboxes:
        settings = with_sandboxes(settings, {"mercadopago": stack.sandboxes["mercadopago"]})
    window = parse_since(since)
    result = asyncio.run(_reconcile(settings, since=datetime.now(UTC) - window))
    click.echo(
        f"checked {result.checked} payment(s); {result.queued} queued for settling, "
        f"{result.up_to_date} already up to date"
    )


async def _reconcile(settings: Settings, *, since: datetime) -> ReconcileResult:
    """The reconcile run with this command's own process resources, closed afterwards."""
    resources = operator_resources(settings)
    try:
        return await run_reconcile(resources, since=since)
    finally:
        await resources.close()


COMMANDS = [trigger, payments_group]
