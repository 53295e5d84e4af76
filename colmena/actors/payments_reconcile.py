"""Repairing missed Mercado Pago webhooks: search recent payments, settle what colmena lacks.

A payment colmena has not seen, or holds in an older status, gets an inbox row and goes through
the very actor a webhook would reach, so the repair obeys the same state machine and follow-up
rules. The inbox key includes the provider's update time: running it twice queues nothing new.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from colmena.actors.payments import mercadopago_client
from colmena.domain.payment_events import PaymentUpdate, interpret_mercadopago
from colmena.runtime.outbox import publish_now
from colmena.runtime.resources import Resources
from colmena.store import inbox, outbox, payments

PAGE_SIZE = 100


@dataclass(frozen=True)
class ReconcileResult:
    checked: int
    queued: int
    up_to_date: int


async def reconcile_mercadopago(resources: Resources, *, since: datetime) -> ReconcileResult:
    """Page through the payments Mercado Pago updated since ``since`` and queue the settling of
    each one colmena lacks or holds in an older status. The caller owns ``resources``."""
    client = mercadopago_client(resources)
    await resources.start()
    checked = queued = up_to_date = 0
    rows = []
    offset = 0
    while True:
        filters: dict[str, Any] = {
            "sort": "date_last_updated",
            "criteria": "desc",
            "range": "date_last_updated",
            "begin_date": since.isoformat(),
            "end_date": "NOW",
            "offset": offset,
            "limit": PAGE_SIZE,
        }
        page = await asyncio.to_thread(client.search_payments, filters)
        results = page.get("results") or []
        for found in results:
            checked += 1
            update = interpret_mercadopago(found)
            if not isinstance(update, PaymentUpdate):
                continue
            async with resources.pool.acquire() as conn, conn.transaction():
                known = await payments.get_by_provider_id(
                    conn, "mercadopago", update.provider_payment_id
                )
                if (
                    known is not None
                    and known.status == update.status.value
                    and known.status_at >= update.provider_at
                ):
                    up_to_date += 1
                    continue
                inbox_id, new = await inbox.record_event(
                    conn,
                    provider="mercadopago",
                    event_key=(
                        f"reconcile:{update.provider_payment_id}:{update.provider_at.isoformat()}"
                    ),
                    kind="payment",
                    payload={
                        "type": "payment",
                        "action": "reconcile",
                        "data": {"id": update.provider_payment_id},
                    },
                )
                if new:
                    queued += 1
                    rows.append(
                        await outbox.record(
                            conn,
                            queue="payments",
                            actor="settle_mercadopago_notification",
                            args=[inbox_id],
                            dedupe_key=f"inbox:{inbox_id}",
                        )
                    )
        offset += len(results)
        if not results or offset >= int((page.get("paging") or {}).get("total", 0)):
            break
    await publish_now(resources.pool, resources.publisher, rows)
    return ReconcileResult(checked=checked, queued=queued, up_to_date=up_to_date)
