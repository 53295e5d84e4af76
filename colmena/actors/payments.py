"""Payments: verified provider events become one settled payment, whatever arrives twice.

Actors (queue "payments"):
- `settle_stripe_event(inbox_id)`: applies a stored Stripe event.
- `settle_stripe_thin_event(inbox_id)`: fetches the related object of a stored thin event
  (event destinations' `v2.core.event`) through Stripe's API, then applies it as the v1 event
  it stands for.
- `settle_mercadopago_notification(inbox_id)`: fetches the payment a stored notification names
  from Mercado Pago's API (the authoritative status, DESIGN.md rule 5), then applies it; for a
  merchant order, fetches the order, then each payment it lists. Unsigned IPN hints go the same
  way; a hint naming an unknown resource is ignored rather than dead-lettered.

All apply the state machine (`colmena.domain.payment_state`) and, in the same transaction,
write the follow-ups to the outbox: a payment's first event in the one statement that creates
the payment, any other under the inbox row's lock (`settle`). Follow-up messages (queue /
actor / args):

- licenses / deliver_license / [payment_id]: first approval, metadata product_kind = "license"
- licenses / revoke_license / [payment_id]: refunded or charged back after approval, license
- stamping / stamp_invoice / [payment_id]: first approval, metadata has "rfc"
- stamping / cancel_invoice / [payment_id]: charged back after approval, "rfc" present
- stamping / issue_credit_note / [payment_id, refunded_minor]: any refund (partial or whole) of an
  approved payment with "rfc" or on a CFDI global; `refunded_minor` is the cumulative refund, and
  `colmena.actors.credit_notes` decides between a credit note and a cancellation
- bots / apply_plan / [tenant_ref, plan, active, source, provider_at]: plan bought or refunded;
  Stripe subscription updated or deleted
- licenses / deliver_license, stamping / stamp_invoice or deliver_invoice: a dispute won
  (`colmena.actors.payment_disputes`, which also suspends and holds while it lasts)

`payment_id` is colmena's payments.id; `plan` is free|pro|enterprise; `active` a bool; `source`
"subscription:<stripe subscription id>" (invoices and subscription events alike) or
"payment:<payment_id>" for a one-off plan purchase; `provider_at` the provider's ISO-8601 time,
so the bots side can ignore a stale plan change. Each follow-up has a dedupe key: at most one per
payment and kind, however many times an event is delivered.

Metadata colmena reads (Stripe `metadata`, Mercado Pago `metadata`): product, product_kind
(license|plan), edition, seats, plan, tenant_id, locale, email, rfc, fiscal_name, fiscal_regime,
fiscal_postal_code, cfdi_use, payment_form, payment_method.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import asyncpg
import structlog

from colmena.actors.payment_disputes import dispute_effects
from colmena.config.metrics import PAYMENT_TRANSITIONS, SECURITY_EVENTS
from colmena.domain.payment_events import (
    Ignored,
    Interpretation,
    PaymentUpdate,
    PlanUpdate,
    RefundUpdate,
    interpret_mercadopago,
    interpret_stripe,
    merchant_order_payments,
    snapshot_of_thin_event,
    stripe_handles,
)
from colmena.domain.payment_state import REVERSED, Status, decide
from colmena.errors import PermanentError
from colmena.gateways.mercadopago import MercadoPagoClient, MercadoPagoNotFound
from colmena.gateways.stripe import StripeEvents
from colmena.runtime.follow_ups import leave_committed
from colmena.runtime.outbox import publish_now
from colmena.runtime.registry import actor
from colmena.runtime.resources import Resources
from colmena.store import global_invoices, inbox, orders, payments, settlements
from colmena.store.outbox import OutboxDraft, OutboxMessage
from colmena.store.payments import Payment

log = structlog.get_logger(__name__)

QUEUE = "payments"


def _plan_message(update: PlanUpdate) -> OutboxDraft:
    return OutboxDraft(
        queue="bots",
        actor="apply_plan",
        args=[
            update.tenant_ref,
            update.plan,
            update.active,
            update.source,
            update.provider_at.isoformat(),
        ],
        dedupe_key=(
            f"apply_plan:{update.source}:{update.provider_at.isoformat()}"
            f":{update.plan}:{update.active}"
        ),
    )


def _plan_source(payment: Payment) -> str:
    """Subscription invoices and subscription events must name the same source for one plan."""
    subscription = payment.metadata.get("subscription")
    return f"subscription:{subscription}" if subscription else f"payment:{payment.id}"


def _follow_ups(payment: Payment, *, first_approval: bool) -> list[OutboxDraft]:
    """The outbox rows a status change calls for."""
    status = Status(payment.status)
    invoice_actor: str | None
    if status is Status.APPROVED and first_approval:
        license_actor, invoice_actor, active = "deliver_license", "stamp_invoice", True
    elif status in REVERSED and payment.approved_at is not None:
        # A refund's invoice follow-up is its credit (`_refund_credit`), not a cancellation.
        invoice_actor = None if status is Status.REFUNDED else "cancel_invoice"
        license_actor, active = "revoke_license", False
    else:
        return []
    drafts: list[OutboxDraft] = []
    if payment.product_kind == "license":
        drafts.append(
            OutboxDraft(
                queue="licenses",
                actor=license_actor,
                args=[payment.id],
                dedupe_key=f"{license_actor}:{payment.id}",
            )
        )
    if invoice_actor is not None and payment.metadata.get("rfc"):
        drafts.append(
            OutboxDraft(
                queue="stamping",
                actor=invoice_actor,
                args=[payment.id],
                dedupe_key=f"{invoice_actor}:{payment.id}",
            )
        )
    if payment.product_kind == "plan":
        plan = payment.metadata.get("plan")
        if payment.tenant_ref and plan:
            drafts.append(
                _plan_message(
                    PlanUpdate(
                        tenant_ref=payment.tenant_ref,
                        plan=plan,
                        active=active,
                        source=_plan_source(payment),
                        provider_at=payment.status_at,
                    ),
                )
            )
        else:
            log.warning("plan payment without tenant_id/plan metadata", payment_id=payment.id)
    return drafts


async def _refund_credit(
    conn: asyncpg.Connection, payment: Payment, refunded_minor: int
) -> list[OutboxDraft]:
    """The credit of a cumulative refund on a payment that was approved and is invoiced (its own
    CFDI, or a CFDI global); one message per figure, however often it is reported."""
    if refunded_minor <= 0 or payment.approved_at is None:
        return []
    if (
        not payment.metadata.get("rfc")
        and await global_invoices.membership(conn, payment.id) is None
    ):
        return []
    return [
        OutboxDraft(
            queue="stamping",
            actor="issue_credit_note",
            args=[payment.id, refunded_minor],
            dedupe_key=f"issue_credit_note:{payment.id}:{refunded_minor}",
        )
    ]


@dataclass
class Settlement:
    """What settling one inbox event writes at its end, in one statement
    (`colmena.store.settlements.finish`): the events reported, at most one status change not
    written yet, the follow-ups, and each interpretation's outcome. `touched` holds each
    payment the event touched as the commit leaves it, for the follow-ups run in this worker."""

    events: list[settlements.PaymentEventRow] = field(default_factory=list)
    change: settlements.StatusChange | None = None
    messages: list[OutboxDraft] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    touched: dict[int, Payment] = field(default_factory=dict)

    async def write_change(self, conn: asyncpg.Connection) -> None:
        """Write the waiting status change now: another payment of the event is read next, and
        a read must find every change made before it."""
        if self.change is not None:
            change, self.change = self.change, None
            await payments.set_status(conn, change.payment_id, change.status, change.provider_at)

    async def finish(self, conn: asyncpg.Connection, inbox_id: int | None) -> list[OutboxMessage]:
        return await settlements.finish(
            conn,
            inbox_id=inbox_id,
            outcome="; ".join(self.outcomes) or "ignored: no payments",
            events=self.events,
            change=self.change,
            messages=self.messages,
        )


async def _apply_refund(
    conn: asyncpg.Connection, refund: RefundUpdate, settlement: Settlement
) -> str:
    """A partial refund: the payment's status stays, its invoice is credited."""
    payment = await payments.get_by_provider_id(conn, refund.provider, refund.provider_payment_id)
    if payment is None:
        return "ignored: refund of an unknown payment"
    settlement.messages += await _refund_credit(conn, payment, refund.refunded_minor)
    return f"refund of {refund.refunded_minor} recorded"


async def _settled(
    conn: asyncpg.Connection, payment: Payment, update: PaymentUpdate, settlement: Settlement
) -> Payment:
    """The payment with the update's status applied, as the follow-ups must read it.

    Written at the end with the rest (`Settlement.change`) when nothing reads it before: a
    payment that names no order, the first status change of the event. Otherwise written now,
    because the order step reads the row, or another change already waits.
    """
    if settlement.change is None and orders.named_order(payment.metadata) is None:
        settlement.change = settlements.StatusChange(
            payment_id=payment.id, status=update.status.value, provider_at=update.provider_at
        )
        approving = update.status is Status.APPROVED and payment.approved_at is None
        return replace(
            payment,
            status=update.status.value,
            status_at=update.provider_at,
            approved_at=datetime.now(UTC) if approving else payment.approved_at,
        )
    settled = await payments.set_status(conn, payment.id, update.status.value, update.provider_at)
    if settled is None:  # locked by this transaction: only a bug or a manual DELETE gets here
        raise PermanentError(f"payment {payment.id} vanished while locked")
    return settled


def _count_applied(update: PaymentUpdate, payment_id: int) -> None:
    PAYMENT_TRANSITIONS.labels(provider=update.provider, status=update.status.value).inc()
    log.info(
        "payment status applied",
        payment_id=payment_id,
        provider=update.provider,
        status=update.status.value,
    )


async def _apply_update(
    conn: asyncpg.Connection, update: PaymentUpdate, settlement: Settlement
) -> str:
    """Apply one provider status to its payment; returns the outcome."""
    await settlement.write_change(conn)
    payment, _created = await payments.lock_or_create(conn, update.details())
    settlement.touched[payment.id] = payment
    decision = decide(Status(payment.status), payment.status_at, update.status, update.provider_at)
    settlement.events.append(
        settlements.PaymentEventRow(
            payment_id=payment.id,
            source=update.source,
            status=update.status.value,
            provider_at=update.provider_at,
            applied=decision.apply,
            reason=decision.reason,
        )
    )
    if not decision.apply:
        log.info(
            "payment event ignored",
            payment_id=payment.id,
            status=update.status.value,
            reason=decision.reason,
        )
        # A status already known may still report a new refund (Mercado Pago's partial ones).
        settlement.messages += await _refund_credit(conn, payment, update.refunded_minor)
        return f"ignored: {decision.reason}"
    settled = await _settled(conn, payment, update, settlement)
    _count_applied(update, payment.id)
    settled, fulfil = await orders.settle_payment(conn, settled)
    settlement.touched[settled.id] = settled
    if not fulfil:
        return f"applied: {update.status.value}; its order is not fulfilled"
    settlement.messages += _follow_ups(settled, first_approval=payment.approved_at is None)
    settlement.messages += await dispute_effects(conn, settled, previous=Status(payment.status))
    settlement.messages += await _refund_credit(conn, settled, update.refunded_minor)
    return f"applied: {update.status.value}"


async def _apply(
    conn: asyncpg.Connection, interpretation: Interpretation, settlement: Settlement
) -> str:
    if isinstance(interpretation, Ignored):
        return f"ignored: {interpretation.reason}"
    if isinstance(interpretation, PlanUpdate):
        settlement.messages.append(_plan_message(interpretation))
        return "plan update"
    if isinstance(interpretation, RefundUpdate):
        return await _apply_refund(conn, interpretation, settlement)
    return await _apply_update(conn, interpretation, settlement)


async def apply_update(
    conn: asyncpg.Connection, update: PaymentUpdate, inbox_id: int | None
) -> tuple[str, list[OutboxMessage]]:
    """Apply one provider status to its payment and write it all in the caller's transaction;
    returns (outcome, follow-up rows recorded)."""
    settlement = Settlement()
    outcome = await _apply(conn, update, settlement)
    settlement.outcomes.append(outcome)
    return outcome, await settlement.finish(conn, inbox_id)


def _first_settlement(interpreted: Interpretation | list[Interpretation]) -> PaymentUpdate | None:
    """The event's update, when creating its payment is all settling it can do: one provider
    status (not `new`) for one payment, naming no order and reporting no refund."""
    updates = interpreted if isinstance(interpreted, list) else [interpreted]
    if len(updates) != 1:
        return None
    [update] = updates
    if (
        not isinstance(update, PaymentUpdate)
        or update.status is Status.NEW
        or update.refunded_minor > 0
        or orders.named_order(update.metadata) is not None
    ):
        return None
    return update


async def _create_settled(
    conn: asyncpg.Connection,
    event: inbox.InboxEvent,
    interpreted: Interpretation | list[Interpretation],
    payment_id: int,
    document_sha256: bytes | None = None,
) -> list[OutboxMessage] | None:
    """Settle a payment's first event in one statement (`settlements.create_settled`); returns
    the follow-ups, or None when the event is not such an update or its payment exists by now.

    What the locked way would decide is known without reading anything: a payment in `new`
    takes any other status; its follow-ups are those of a first approval; it was never approved,
    so no dispute effect applies; it names no order, and reports no refund to credit.
    """
    update = _first_settlement(interpreted)
    if update is None:
        return None
    now = datetime.now(UTC)
    payment = Payment(
        id=payment_id,
        provider=update.provider,
        provider_payment_id=update.provider_payment_id,
        amount_minor=update.amount_minor,
        currency=update.currency,
        customer_email=update.customer_email,
        customer_locale=update.customer_locale,
        tenant_ref=update.tenant_ref,
        product_ref=update.product_ref,
        product_kind=update.product_kind,
        metadata=update.metadata or {},
        status=update.status.value,
        status_at=update.provider_at,
        approved_at=now if update.status is Status.APPROVED else None,
        created_at=now,
        updated_at=now,
    )
    created = await settlements.create_settled(
        conn,
        inbox_id=event.id,
        payment=payment,
        source=update.source,
        outcome=f"applied: {update.status.value}",
        messages=_follow_ups(payment, first_approval=True),
        document_sha256=document_sha256,
    )
    if created is None:
        return None
    settled, rows = created
    _count_applied(update, settled.id)
    leave_committed(settled.id, settled)
    return rows


@dataclass(frozen=True)
class CarriedEvent:
    """An event as its message carried it (`inbox.ArrivedEvent.carried`), with the payment id
    the ingress drew for it. Nothing vouches for it but the digest the settling statement
    compares with the stored event's, so it is decided on but never trusted."""

    event: inbox.InboxEvent
    document_sha256: bytes
    payment_id: int


async def settle(
    pool: asyncpg.Pool,
    inbox_id: int,
    interpret: Callable[[inbox.InboxEvent], Interpretation | list[Interpretation]],
    *,
    carried: CarriedEvent | None = None,
) -> list[OutboxMessage]:
    """Apply the inbox event, as `interpret` reads it (one interpretation, or one per payment
    for a merchant order), exactly once; returns the follow-ups to publish. `interpret` runs
    only when the event is not yet processed, on the event as carried or read unlocked and,
    when the event goes the locked way, again under its lock: it must depend on the event alone.

    A payment's first event settles in one statement of its own transaction, which creates the
    payment settled (`_create_settled`): at once for an event its message carried, whose stored
    digest the statement checks, else after reading the event with the id its payment would
    take. Any other event, or a first one that finds its payment created meanwhile, is read if
    it was not, then takes five more round trips: BEGIN, lock the event, lock or create the
    payment, write everything decided (`Settlement.finish`), COMMIT. A carried event that is not
    the stored one is a security event, and the stored one is settled. Once committed, each
    payment is left to the follow-ups this worker runs next (`leave_committed`): the license
    delivery then need not read it again.
    """
    async with pool.acquire() as conn:
        if carried is not None:
            created = await _create_settled(
                conn,
                carried.event,
                interpret(carried.event),
                carried.payment_id,
                carried.document_sha256,
            )
            if created is not None:
                return created
        read = await inbox.load_drawing_payment_id(conn, inbox_id)
        if read is None:
            raise PermanentError(f"inbox event {inbox_id} does not exist")
        first_read, payment_id = read
        altered = carried is not None and carried.event.payload != first_read.payload
        if altered:
            SECURITY_EVENTS.labels(reason="carried_event_altered").inc()
            log.warning(
                "security: a message carried another event than the one stored; "
                "settling the stored one",
                inbox_id=inbox_id,
            )
        if first_read.processed:
            return []
        # A carried event that is the stored one was tried as it is: its payment exists.
        if carried is None or altered:
            created = await _create_settled(conn, first_read, interpret(first_read), payment_id)
            if created is not None:
                return created
        async with conn.transaction():
            event = await inbox.load_for_processing(conn, inbox_id)
            if event is None:
                raise PermanentError(f"inbox event {inbox_id} does not exist")
            if event.processed:
                return []
            interpreted = interpret(event)
            settlement = Settlement()
            for interpretation in interpreted if isinstance(interpreted, list) else [interpreted]:
                settlement.outcomes.append(await _apply(conn, interpretation, settlement))
            rows = await settlement.finish(conn, inbox_id)
    for payment in settlement.touched.values():
        leave_committed(payment.id, payment)
    return rows


async def _stored_event(pool: asyncpg.Pool, inbox_id: int) -> inbox.InboxEvent:
    async with pool.acquire() as conn:
        event = await inbox.load(conn, inbox_id)
    if event is None:
        raise PermanentError(f"inbox event {inbox_id} does not exist")
    return event


def carried_stripe_event(
    inbox_id: int, document: str | None, payment_id: int | None
) -> CarriedEvent | None:
    """The Stripe event the ingress's message carried, if it carried one that reads as an event
    (anything else is left to the stored event)."""
    if document is None or payment_id is None:
        return None
    try:
        payload = json.loads(document)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    event = inbox.InboxEvent(
        id=inbox_id,
        provider="stripe",
        event_key=str(payload.get("id")),
        kind=str(payload.get("type")),
        payload=payload,
        processed=False,
    )
    return CarriedEvent(event, hashlib.sha256(document.encode()).digest(), payment_id)


@actor(queue=QUEUE, name="settle_stripe_event")
async def settle_stripe_event(
    resources: Resources,
    inbox_id: int,
    document: str | None = None,
    payment_id: int | None = None,
) -> None:
    """Settle a stored Stripe event; ``document`` and ``payment_id``: the event's JSON text and
    a payment id drawn for it, when the ingress's message carries them (the relay's does not)."""
    rows = await settle(
        resources.pool,
        inbox_id,
        lambda event: interpret_stripe(event.payload),
        carried=carried_stripe_event(inbox_id, document, payment_id),
    )
    await publish_now(resources.pool, resources.publisher, rows, marks=resources.published_marks)


class StripeApiNotConfigured(PermanentError):
    """No API key: a thin event carries no object, and its related object cannot be fetched."""

    hint = "set COLMENA_STRIPE_SECRET_KEY (a restricted key that reads objects is enough)"


def stripe_events(resources: Resources) -> StripeEvents:
    settings = resources.settings
    if settings.stripe_secret_key is None:
        raise StripeApiNotConfigured("COLMENA_STRIPE_SECRET_KEY is not set")
    return StripeEvents(
        api_key=settings.stripe_secret_key.get_secret_value(),
        api_base=settings.stripe_api_url,
        timeout_s=settings.stripe_timeout_s,
    )


def _thin_interpretation(client: StripeEvents, notification: dict[str, object]) -> Interpretation:
    """Blocking: the related object of a thin event, fetched, read as its v1 event. Only types
    colmena acts on cost an API call."""
    kind = str(notification["type"]).removeprefix("v1.")
    if kind == notification["type"] or not stripe_handles(kind):
        return Ignored(f"thin event type {notification['type']} is not handled")
    # A StripeError propagates: unavailable is retried, refused dead-letters.
    related = client.related_object(dict(notification))
    if related is None:
        return Ignored(f"thin event {notification['id']} has no related object")
    return interpret_stripe(snapshot_of_thin_event(dict(notification), related))


@actor(queue=QUEUE, name="settle_stripe_thin_event")
async def settle_stripe_thin_event(resources: Resources, inbox_id: int) -> None:
    event = await _stored_event(resources.pool, inbox_id)
    if event.processed:
        return
    interpretation = await asyncio.to_thread(
        _thin_interpretation, stripe_events(resources), event.payload
    )
    rows = await settle(resources.pool, inbox_id, lambda _event: interpretation)
    await publish_now(resources.pool, resources.publisher, rows, marks=resources.published_marks)


class MercadoPagoNotConfigured(PermanentError):
    """No access token: a notification carries only an id, and the payment cannot be fetched."""

    hint = "set COLMENA_MERCADOPAGO_ACCESS_TOKEN (`colmena check` lists it)"


def mercadopago_client(resources: Resources) -> MercadoPagoClient:
    settings = resources.settings
    if settings.mercadopago_access_token is None:
        raise MercadoPagoNotConfigured("COLMENA_MERCADOPAGO_ACCESS_TOKEN is not set")
    return MercadoPagoClient(
        access_token=settings.mercadopago_access_token.get_secret_value(),
        base_url=settings.mercadopago_api_url,
        timeout_s=settings.mercadopago_timeout_s,
    )


# Merchant orders arrive as IPN topic `merchant_order` and as webhook type
# `topic_merchant_order_wh`.
MERCHANT_ORDER_KINDS = ("merchant_order", "topic_merchant_order_wh")


def _payment_ids(client: MercadoPagoClient, kind: str, resource_id: str) -> list[str]:
    if kind == "payment":
        return [resource_id]
    try:
        return merchant_order_payments(client.get_merchant_order(resource_id))
    except ValueError as exc:
        raise PermanentError(f"merchant order {resource_id}: {exc}") from None


def _fetched(client: MercadoPagoClient, event: inbox.InboxEvent) -> list[Interpretation]:
    """Blocking: the payments the notification names, each fetched from the API and read."""
    resource_id = str(event.payload["data"]["id"])
    try:
        # A MercadoPagoError propagates: unavailable is retried, unknown or refused
        # dead-letters.
        return [
            interpret_mercadopago(client.get_payment(payment_id))
            for payment_id in _payment_ids(client, event.kind, resource_id)
        ]
    except MercadoPagoNotFound:
        if event.payload.get("hint") is None:
            raise
        # Anyone can send a hint: one naming nothing real is noise, not a dead letter.
        return [Ignored(f"hinted {event.kind} {resource_id} is unknown to the API")]


@actor(queue=QUEUE, name="settle_mercadopago_notification")
async def settle_mercadopago_notification(resources: Resources, inbox_id: int) -> None:
    event = await _stored_event(resources.pool, inbox_id)
    if event.processed:
        return
    if event.kind != "payment" and event.kind not in MERCHANT_ORDER_KINDS:
        ignored = Ignored(f"notification type {event.kind} is not handled")
        rows = await settle(resources.pool, inbox_id, lambda _event: ignored)
    else:
        interpretations = await asyncio.to_thread(_fetched, mercadopago_client(resources), event)
        rows = await settle(resources.pool, inbox_id, lambda _event: interpretations)
    await publish_now(resources.pool, resources.publisher, rows, marks=resources.published_marks)
