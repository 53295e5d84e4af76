"""What a dispute does to what a payment bought, decided with the payment's status.

A paid payment going into mediation (Stripe `charge.dispute.created`, Mercado Pago
`in_mediation`) suspends its license (links stop working, unsent emails wait) and holds its
invoice (neither stamped nor emailed). Both are plain row updates made in the transaction that
applied the status, so no download or stamp slips in between. Coming out approved (a dispute
won) lifts both and queues, through the outbox in the same transaction, the follow-ups the
dispute may have held back: the license delivery (a no-op if it was delivered) and the
invoice's stamping or delivery. A lost dispute is a chargeback, and the usual reversal
follow-ups (`revoke_license`, `cancel_invoice`) apply.
"""

from __future__ import annotations

import asyncpg
import structlog

from colmena.domain.payment_state import Status
from colmena.store import invoices, licenses
from colmena.store.outbox import OutboxDraft
from colmena.store.payments import Payment

log = structlog.get_logger(__name__)


async def dispute_effects(
    conn: asyncpg.Connection, payment: Payment, *, previous: Status
) -> list[OutboxDraft]:
    """Suspend and hold, or restore and release, for the payment's new status; the follow-up
    rows to publish. Never-paid payments had nothing delivered, so nothing changes for them."""
    if payment.approved_at is None:
        return []
    status = Status(payment.status)
    if status is Status.IN_MEDIATION:
        reason = f"{payment.provider} payment disputed"
        suspended = await licenses.suspend(conn, payment.id, reason)
        held = await invoices.hold(conn, payment.id, reason)
        log.warning(
            "payment disputed: license suspended, invoice held",
            payment_id=payment.id,
            license_suspended=suspended,
            invoice_held=held is not None,
        )
        return []
    if status is Status.APPROVED and previous is Status.IN_MEDIATION:
        await licenses.restore(conn, payment.id)
        await invoices.release(conn, payment.id)
        log.info("dispute won: license restored, invoice released", payment_id=payment.id)
        return await _resumed(conn, payment)
    return []


async def _resumed(conn: asyncpg.Connection, payment: Payment) -> list[OutboxDraft]:
    """The follow-ups a won dispute resumes, keyed by the status time so a second dispute won
    later resumes again."""
    at = payment.status_at.isoformat()
    rows: list[OutboxDraft] = []
    if payment.product_kind == "license":
        rows.append(
            OutboxDraft(
                queue="licenses",
                actor="deliver_license",
                args=[payment.id],
                dedupe_key=f"deliver_license:{payment.id}:restored:{at}",
            )
        )
    if payment.metadata.get("rfc"):
        invoice = await invoices.get_by_payment(conn, payment.id)
        if invoice is None or invoice.uuid is None:
            queue_actor, args = "stamp_invoice", [payment.id]
        elif invoice.emailed_at is None:
            queue_actor, args = "deliver_invoice", [invoice.id]
        else:
            return rows
        rows.append(
            OutboxDraft(
                queue="stamping",
                actor=queue_actor,
                args=args,
                dedupe_key=f"{queue_actor}:{args[0]}:restored:{at}",
            )
        )
    return rows
