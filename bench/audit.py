"""Audit trail: sealing and checking the hash chain, in rows per second, against streaming the
same rows to Python with a plain SELECT.

Builds `--rows` audit rows (payment-like before/after, as the triggers write them) in a
database of its own, then for each of `--rounds` rounds, in turn: the baseline (every link with
its row, streamed through a cursor and dropped), a seal of every row from scratch (the links of
the previous round removed first), and a full check (`verify_chain`, read-only). The machine is
shared, so each figure is the median of its rounds and is quoted with its same-run baseline.

    python bench/audit.py [--rows 200000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.common import exit_on_sigterm, figure, machine, median, scratch_database  # noqa: E402
from colmena.store import audit  # noqa: E402

_BUILD = """
INSERT INTO audit_events (actor, action, subject_kind, subject_id, before, after, cause)
SELECT 'db:colmena_app/colmena-worker', 'payment.approved', 'payment', g::text,
       jsonb_build_object('status', 'new', 'amount_minor', 1000 + g, 'currency', 'MXN',
                          'order_id', NULL),
       jsonb_build_object('status', 'approved', 'amount_minor', 1000 + g, 'currency', 'MXN',
                          'order_id', g, 'total', round(g / 7.0, 4)),
       'event:stripe:evt_' || md5(g::text)
  FROM generate_series($1::bigint, $2::bigint) AS g
"""


async def build(conn: asyncpg.Connection, rows: int) -> None:
    """`rows` audit rows, written in transactions of 100,000."""
    for first in range(1, rows + 1, 100_000):
        await conn.execute(_BUILD, first, min(rows, first + 99_999))
    await conn.execute("VACUUM ANALYZE audit_events")


async def baseline(conn: asyncpg.Connection) -> float:
    """Rows/s of a plain SELECT streaming every link and its row to Python."""
    started = time.perf_counter()
    count = 0
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        query = (
            "SELECT s.*, e.* FROM audit_seals s LEFT JOIN audit_events e ON e.id = s.event_id"
            " ORDER BY s.seq"
        )
        async for _ in conn.cursor(query, prefetch=2000):
            count += 1
    return count / (time.perf_counter() - started)


async def unseal(conn: asyncpg.Connection) -> None:
    """Remove every link (the bench owns this database; the trail itself refuses it)."""
    await conn.execute("ALTER TABLE audit_seals DISABLE TRIGGER audit_seals_no_truncate")
    await conn.execute("TRUNCATE audit_seals")
    await conn.execute("ALTER TABLE audit_seals ENABLE TRIGGER audit_seals_no_truncate")
    await conn.execute("VACUUM ANALYZE audit_seals")


async def seal(conn: asyncpg.Connection, rows: int) -> float:
    await unseal(conn)
    started = time.perf_counter()
    sealed = await audit.seal(conn)
    elapsed = time.perf_counter() - started
    assert sealed == rows, (sealed, rows)
    return rows / elapsed


async def verify(conn: asyncpg.Connection, rows: int) -> float:
    started = time.perf_counter()
    verdict = await audit.verify_chain(conn, seal_first=False)
    elapsed = time.perf_counter() - started
    assert verdict.ok and verdict.checked == rows, verdict
    return rows / elapsed


async def measure(rows: int, rounds: int) -> tuple[list[float], list[float], list[float]]:
    """(baseline, seal, verify) rows/s, one of each per round."""
    streamed: list[float] = []
    sealed: list[float] = []
    verified: list[float] = []
    async with scratch_database() as url:
        conn = await asyncpg.connect(url)
        try:
            started = time.perf_counter()
            await build(conn, rows)
            print(f"built {rows} audit rows in {time.perf_counter() - started:.1f} s", flush=True)
            for index in range(1, rounds + 1):
                sealed.append(await seal(conn, rows))
                streamed.append(await baseline(conn))
                verified.append(await verify(conn, rows))
                print(
                    f"round {index}: select {streamed[-1]:.0f} rows/s, seal {sealed[-1]:.0f}"
                    f" rows/s, verify {verified[-1]:.0f} rows/s",
                    flush=True,
                )
        finally:
            await conn.close()
    return streamed, sealed, verified


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    exit_on_sigterm()
    print(f"machine: {machine()}; rows: {args.rows}; rounds: {args.rounds}")
    streamed, sealed, verified = asyncio.run(measure(args.rows, args.rounds))
    name = "SELECT streaming the links and rows"
    figure("audit rows streamed by a plain SELECT", median(streamed), "rows/s")
    for label, values in (("sealed", sealed), ("verified", verified)):
        figure(
            f"audit rows {label}",
            median(values),
            "rows/s",
            baseline=median(streamed),
            baseline_name=name,
        )


if __name__ == "__main__":
    main()
