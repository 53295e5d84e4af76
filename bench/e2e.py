"""End to end: signed webhook in -> payment approved -> license issued and emailed, per second.

A live colmena (ingress, scheduler, 2 workers on payments+licenses) gets N payments at a fixed
offered rate; latency is from the moment the webhook was sent to the license email being
accepted by the local SMTP server (`license_emails.sent_at`), p50/p99; throughput is N over the
time from the first send to the last email.

    python bench/e2e.py [--payments 300] [--rate 20] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.chaos import METADATA, SECRET, running_system  # noqa: E402
from bench.common import figure, machine, percentile  # noqa: E402
from colmena.gateways import sample_events as events  # noqa: E402
from colmena.gateways.stripe import sign  # noqa: E402


async def run(payments: int, rate: float, workers: int) -> None:
    async with running_system(worker_count=workers) as system:
        sent_at: dict[str, float] = {}
        async with aiohttp.ClientSession() as session:
            started = time.time()
            for index in range(payments):
                delay = started + index / rate - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                intent = events.payment_intent(metadata=METADATA, amount=20_000 + index)
                body = json.dumps(events.stripe_event("payment_intent.succeeded", intent))
                sent_at[intent["id"]] = time.time()
                async with session.post(
                    system.webhook_url,
                    data=body,
                    headers={
                        "Content-Type": "application/json",
                        "Stripe-Signature": sign(body, SECRET),
                    },
                ) as response:
                    if response.status != 200:
                        raise RuntimeError(f"ingress answered {response.status}")
        deadline = time.time() + 600
        while (
            await system.db.fetchval(
                "SELECT count(*) FROM license_emails WHERE sent_at IS NOT NULL"
            )
            < payments
        ):
            if time.time() > deadline:
                raise RuntimeError("licenses did not all go out within 600 s")
            await asyncio.sleep(0.2)
        rows = await system.db.fetch(
            "SELECT p.provider_payment_id, extract(epoch FROM e.sent_at)::float8 AS sent "
            "FROM license_emails e JOIN licenses l ON l.id = e.license_id "
            "JOIN payments p ON p.id = l.payment_id"
        )
    latencies = [row["sent"] - sent_at[row["provider_payment_id"]] for row in rows]
    last = max(row["sent"] for row in rows)
    figure("end to end payments -> license emailed", payments / (last - started), "payments/s")
    figure("end to end p50", percentile(latencies, 50) * 1000, "ms")
    figure("end to end p99", percentile(latencies, 99) * 1000, "ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--payments", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0, help="offered payments per second")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(
        f"machine: {machine()}; payments: {args.payments} at {args.rate}/s; "
        f"workers: {args.workers} x 4 threads"
    )
    asyncio.run(run(args.payments, args.rate, args.workers))


if __name__ == "__main__":
    main()
