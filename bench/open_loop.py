"""An open-loop webhook sender and the end-to-end latencies it leads to, for e2e and capacity.

Open loop: each signed payment webhook leaves at its own time (`start + i / rate`), whether or
not earlier ones were answered, as providers send them. A closed-loop sender waits for each
answer and so slows down with the system it measures, hiding the backlog.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Collection

import aiohttp
import asyncpg

from bench.chaos import METADATA, SECRET
from colmena.gateways import sample_events as events
from colmena.gateways.stripe import sign


async def send_open_loop(
    session: aiohttp.ClientSession, url: str, *, rate: float, count: int, first_amount: int
) -> dict[str, float]:
    """Send `count` succeeded payments at `rate` per second; the send time (epoch) per payment id.

    Raises once all are answered if any answer was not a 200.
    """
    sent_at: dict[str, float] = {}
    statuses: list[int] = []

    async def post(amount: int) -> None:
        intent = events.payment_intent(metadata=METADATA, amount=amount)
        body = json.dumps(events.stripe_event("payment_intent.succeeded", intent))
        sent_at[intent["id"]] = time.time()
        async with session.post(
            url,
            data=body,
            headers={"Content-Type": "application/json", "Stripe-Signature": sign(body, SECRET)},
        ) as response:
            await response.read()
            statuses.append(response.status)

    started = time.monotonic()
    tasks = []
    for index in range(count):
        delay = started + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing: the next payment's send time
        tasks.append(asyncio.create_task(post(first_amount + index)))
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
