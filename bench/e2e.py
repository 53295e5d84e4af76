"""End to end: signed webhook in -> payment approved -> license issued and emailed, per second.

A live colmena (ingress, scheduler, 2 workers on payments+licenses, PostgreSQL reached
directly) gets N payments open loop at a fixed offered rate (each webhook leaves at its own
time, answered or not: bench/open_loop.py); latency is from the moment the webhook was sent to
the license email being accepted by the local SMTP server (`license_emails.sent_at`), p50/p99;
throughput is N over the time from the first send to the last email. bench/capacity.py sweeps
the rate to find the knee.

    python bench/e2e.py [--payments 300] [--rate 20] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.chaos import running_system  # noqa: E402
from bench.common import figure, machine, percentile  # noqa: E402
from bench.open_loop import send_open_loop, signed_payments, wait_emailed  # noqa: E402


async def run(payments: int, rate: float, workers: int) -> None:
    async with running_system(worker_count=workers, database_via_proxy=False) as system:
        webhooks = signed_payments(payments, first_amount=20_000)
        started = time.time()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            sent_at = await send_open_loop(session, system.webhook_url, webhooks, rate=rate)
        done = await wait_emailed(system.db, sent_at, timeout_s=600)
        if done is None:
            raise RuntimeError("licenses did not all go out within 600 s")
    latencies = [done[payment] - sent_at[payment] for payment in done]
    last = max(done.values())
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
