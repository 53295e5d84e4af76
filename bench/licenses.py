"""Licenses issued per second end to end, and where the time goes.

End to end means: a `deliver_license` message on RabbitMQ -> license row signed and stored,
package zipped to disk, email with the link accepted by an SMTP server (the benches' sink on
127.0.0.1). One worker (one process, N threads, one event loop, as Dramatiq's AsyncIO
middleware runs it) on the real PostgreSQL.

Shares are of the summed actor time: signing (Ed25519 sign, and the verify before zipping),
zipping (in a thread), database (every asyncpg query, transactions included), SMTP (the whole
conversation) and the rest (pool waits, templates, event-loop contention). With N > 1 the
phases of different messages overlap, so a phase's time includes waiting for the loop.

    python bench/licenses.py [--licenses 300] [--threads 1,4,16] [--product-kib 512]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import dramatiq
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.common import AMQP_URL, delete_queues, figure, machine, scratch_database  # noqa: E402
from bench.standins.smtp import SmtpSink  # noqa: E402
from colmena.actors import all_actors  # noqa: E402
from colmena.actors import licenses as actor_module  # noqa: E402
from colmena.config import Settings  # noqa: E402
from colmena.config.logging import configure_logging  # noqa: E402
from colmena.domain.licensing import generate_key_pair  # noqa: E402
from colmena.gateways.mail import SmtpMailer  # noqa: E402
from colmena.gateways.packaging import Packager  # noqa: E402
from colmena.runtime.broker import build_broker  # noqa: E402
from colmena.runtime.publisher import AmqpPublisher  # noqa: E402
from colmena.runtime.registry import ActorSpec  # noqa: E402
from colmena.runtime.resources import Resources  # noqa: E402

PHASES = ("signing", "zipping", "database", "smtp")
_DB_METHODS = ("execute", "executemany", "fetch", "fetchrow", "fetchval")


class Clock:
    """Seconds spent per phase, summed over messages (thread-safe enough: += on floats under
    the GIL is what we measure with, and the figures are totals of many calls)."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)

    def reset(self) -> None:
        self.spent.clear()

    def wrap_sync(self, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[phase] += time.perf_counter() - started

        return timed

    def wrap_async(self, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.spent[phase] += time.perf_counter() - started

        return timed


def timed_actors(clock: Clock, names: tuple[str, ...]) -> list[ActorSpec]:
    """Every actor spec, those named timed as a whole under the phase "total" (the registry
    itself is left as it is: the broker is built from these)."""
    return [
        dataclasses.replace(spec, fn=clock.wrap_async("total", spec.fn))
        if spec.name in names
        else spec
        for spec in all_actors()
    ]


@contextmanager
def instrumented(clock: Clock) -> Iterator[None]:
    """Time the phases by wrapping what the actor calls; undone afterwards."""
    saved: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, wrapper: Any) -> None:
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, wrapper)

    patch(actor_module, "sign_license", clock.wrap_sync("signing", actor_module.sign_license))
    patch(
        actor_module,
        "verify_license_key",
        clock.wrap_sync("signing", actor_module.verify_license_key),
    )
    patch(Packager, "digest", clock.wrap_sync("zipping", Packager.digest))
    patch(SmtpMailer, "send_email", clock.wrap_async("smtp", SmtpMailer.send_email))
    for method in _DB_METHODS:
        patch(
            asyncpg.connection.Connection,
            method,
            clock.wrap_async("database", getattr(asyncpg.connection.Connection, method)),
        )
    try:
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


def make_product(root: Path, kib: int) -> None:
    """A product of ten files: half random bytes (binaries), half repetitive text (docs)."""
    product = root / "bench-product"
    product.mkdir(parents=True)
    per_file = kib * 1024 // 10
    for index in range(5):
        (product / f"bin-{index}.so").write_bytes(os.urandom(per_file))
        (product / f"doc-{index}.txt").write_text(
            ("colmena license bench line\n" * (per_file // 27 + 1))[:per_file]
        )


async def insert_payments(url: str, count: int) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            """
            INSERT INTO payments (provider, provider_payment_id, amount_minor, currency,
                customer_email, customer_locale, product_ref, product_kind, metadata, status,
                status_at, approved_at)
            SELECT 'stripe', 'pi_bench_' || g, 49900, 'USD', 'buyer' || g || '@example.com', 'es',
                'bench-product', 'license', '{"edition": "enterprise", "seats": "5"}'::jsonb,
                'approved', now(), now()
            FROM generate_series(1, $1) AS g
            RETURNING id
            """,
            count,
        )
        return [row["id"] for row in rows]
    finally:
        await conn.close()


@dataclasses.dataclass
class Run:
    rate: float
    shares: dict[str, float]


async def run(threads: int, licenses: int, product_kib: int) -> Run:
    prefix = f"bench{uuid.uuid4().hex[:6]}_"
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp, SmtpSink() as smtp:
        make_product(Path(tmp, "products"), product_kib)
        async with scratch_database() as url:
            settings = Settings(
                database_url=url,
                broker_url=AMQP_URL,
                queue_prefix=prefix,
                data_dir=Path(tmp, "data"),
                db_pool_max=threads + 2,
                license_signing_key=SecretStr(generate_key_pair().private_pem),
                license_products_dir=Path(tmp, "products"),
                smtp_host=smtp.host,
                smtp_port=smtp.port,
                smtp_starttls=False,
                _env_file=None,
            )
            payment_ids = await insert_payments(url, licenses + 1)
            with instrumented(clock):
                resources = Resources(
                    settings, database_url=url, publisher=AmqpPublisher(AMQP_URL, prefix)
                )
                actors = timed_actors(clock, ("deliver_license",))
                broker = build_broker(settings, resources, actors, broker_url=AMQP_URL)
                broker.emit_after("process_boot")
                worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
                worker.start()
                try:
                    deliver = broker.get_actor("deliver_license")
                    deliver.send(payment_ids[0])  # warm-up: pool, broker channels, SMTP path
                    await smtp.wait_for_async(1, timeout=60)
                    clock.reset()
                    started = time.perf_counter()
                    for payment_id in payment_ids[1:]:
                        deliver.send(payment_id)
                    await smtp.wait_for_async(licenses + 1, timeout=600)
                    elapsed = time.perf_counter() - started
                finally:
                    worker.stop()
                    broker.close()
                    delete_queues(prefix)
    total = clock.spent["total"]
    shares = {phase: 100 * clock.spent[phase] / total for phase in PHASES}
    shares["other"] = max(0.0, 100 - sum(shares.values()))
    return Run(rate=licenses / elapsed, shares=shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--licenses", type=int, default=300)
    parser.add_argument("--threads", default="1,4,16", help="comma-separated worker thread counts")
    parser.add_argument(
        "--product-kib", type=int, default=512, help="size of the product directory"
    )
    args = parser.parse_args()
    configure_logging(dev=True, level="WARNING")  # the figures are the output
    counts = [int(n) for n in args.threads.split(",")]
    print(
        f"machine: {machine()}; licenses per run: {args.licenses}; "
        f"product: {args.product_kib} KiB in 10 files"
    )
    baseline: float | None = None
    for threads in counts:
        result = asyncio.run(run(threads, args.licenses, args.product_kib))
        figure(
            f"licenses issued end to end, {threads} worker thread(s)",
            result.rate,
            "licenses/s",
            baseline=baseline if threads != counts[0] else None,
            baseline_name=f"{counts[0]} thread(s)",
        )
        baseline = baseline or result.rate
        for phase, share in result.shares.items():
            figure(f"  share of actor time in {phase}, {threads} thread(s)", share, "%")


if __name__ == "__main__":
    main()
