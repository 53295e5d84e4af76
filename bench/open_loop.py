"""An open-loop webhook sender and the end-to-end latencies it leads to, for e2e and capacity.

Open loop: each signed payment webhook leaves at its own time (`start + i / rate`), whether or
not earlier ones were answered, as providers send them. A closed-loop sender waits for each
answer and so slows down with the system it measures, hiding the backlog.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import aiohttp
import asyncpg

from bench.chaos import METADATA, SECRET
from colmena.gateways import sample_events as events
from colmena.gateways.stripe import sign


@dataclass(frozen=True)
class SignedPayment:
    """One payment's `payment_intent.succeeded` webhook, body and headers as sent."""

    payment_id: str
    body: bytes
    headers: dict[str, str]


def signed_payments(count: int, first_amount: int) -> list[SignedPayment]:
    """`count` webhooks built and signed ahead, so that sending costs the driver (which shares
    the machine it measures) only the sending. Stripe's signatures stay valid for 5 minutes."""
    payments = []
    for index in range(count):
        intent = events.payment_intent(metadata=METADATA, amount=first_amount + index)
        body = json.dumps(events.stripe_event("payment_intent.succeeded", intent))
        headers = {"Content-Type": "application/json", "Stripe-Signature": sign(body, SECRET)}
        payments.append(SignedPayment(intent["id"], body.encode(), headers))
    return payments


async def send_open_loop(
    session: aiohttp.ClientSession, url: str, payments: Sequence[SignedPayment], *, rate: float
) -> dict[str, float]:
    """Send `payments` at `rate` per second; the send time (epoch) per payment id.

    Raises once all are answered if any answer was not a 200.
    """
    sent_at: dict[str, float] = {}
    statuses: list[int] = []

    async def post(payment: SignedPayment) -> None:
        sent_at[payment.payment_id] = time.time()
        async with session.post(url, data=payment.body, headers=payment.headers) as response:
            await response.read()
            statuses.append(response.status)

    started = time.monotonic()
    tasks = []
    for index, payment in enumerate(payments):
        delay = started + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing: the next payment's send time
        tasks.append(asyncio.create_task(post(payment)))
    await asyncio.gather(*tasks)
    refused = [status for status in statuses if status != 200]
    if refused:
        raise RuntimeError(f"the ingress refused {len(refused)} webhooks: {sorted(set(refused))}")
    return sent_at


async def emailed(db: asyncpg.Connection, payment_ids: Collection[str]) -> dict[str, float]:
    """When each of `payment_ids` had its license email accepted by the SMTP server (epoch)."""
    rows = await db.fetch(
        "SELECT p.provider_payment_id, extract(epoch FROM e.sent_at)::float8 AS sent "
        "FROM license_emails e JOIN licenses l ON l.id = e.license_id "
        "JOIN payments p ON p.id = l.payment_id "
        "WHERE e.sent_at IS NOT NULL AND p.provider_payment_id = ANY($1::text[])",
        list(payment_ids),
    )
    return {row["provider_payment_id"]: row["sent"] for row in rows}


async def wait_emailed(
    db: asyncpg.Connection, payment_ids: Collection[str], timeout_s: float
) -> dict[str, float] | None:
    """The email times once every payment was emailed, or None after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = await emailed(db, payment_ids)
        if len(done) == len(payment_ids):
            return done
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.5)
