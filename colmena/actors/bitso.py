"""Bitso: verified deliveries settle payments through the same machine as Stripe's.

Actor (queue "payments"): `settle_bitso_event(inbox_id)` applies a stored Bitso delivery once,
whatever arrives twice or out of order:

- `payment_intent` (Pay with Bitso): COMPLETED approves, FAILED rejects, EXPIRED cancels (final:
  a later COMPLETED is ignored by the state machine); CREATED/PENDING/PROCESSING are pending and
  in process. The payment names its order by `external_ref`, the order id colmena created the
  intent with; the order step of `actors.payments.apply_update` (store/orders) links it and
  takes the order's product, buyer and fiscal data, never the provider's.
- `funding` (a SPEI deposit): settles the Bitso order whose id the transfer's `concepto`
  carries; without a reference, or with one that matches no Bitso order, it is recorded in the
  inbox as ignored, with the reason, and nothing else happens.

No Bitso call is needed: the delivery is signed, so its body is the state (DESIGN.md rule 5 is
about unsigned notifications). A database error propagates and is retried; an event that cannot
be read dead-letters at once (PermanentError).
"""

from __future__ import annotations

import uuid

import asyncpg

from colmena.actors.payments import QUEUE, settle
from colmena.domain.payment_events import Interpretation, bitso_funding_reference, interpret_bitso
from colmena.errors import PermanentError
from colmena.runtime.outbox import publish_now
from colmena.runtime.registry import actor
from colmena.runtime.resources import Resources
from colmena.store import inbox, orders


async def _funding_order(conn: asyncpg.Connection, event: inbox.InboxEvent) -> uuid.UUID | None:
    """The Bitso order a deposit's reference names, when there is one."""
    if event.kind != "funding" or not isinstance(event.payload.get("payload"), dict):
        return None
    reference = bitso_funding_reference(event.payload["payload"])
    if reference is None:
        return None
    order = await orders.get(conn, reference)
    return order.id if order is not None and order.provider == "bitso" else None


def _interpret(event: inbox.InboxEvent, funding_order: uuid.UUID | None) -> Interpretation:
    try:
        return interpret_bitso(event.payload, funding_order=funding_order)
    except (KeyError, TypeError, ValueError) as exc:
        raise PermanentError(f"Bitso event {event.id} cannot be read: {exc!r}") from None


@actor(queue=QUEUE, name="settle_bitso_event")
async def settle_bitso_event(resources: Resources, inbox_id: int) -> None:
    async with resources.pool.acquire() as conn:
        event = await inbox.load(conn, inbox_id)
        if event is None:
            raise PermanentError(f"inbox event {inbox_id} does not exist")
        if event.processed:
            return
        funding_order = await _funding_order(conn, event)
    rows = await settle(resources.pool, inbox_id, lambda stored: _interpret(stored, funding_order))
    await publish_now(resources.pool, resources.publisher, rows)
