"""The audit trail: who changed money, license, invoice, plan and key state, and why.

Row changes are written by triggers (migration 0021), so this module only tells those triggers
who is acting (`attribute`), records operator actions that change no row (`record_action`),
seals the hash chain (`seal`) and checks it (`verify_chain`). The chain rules themselves are
pure, in `colmena.domain.audit_chain`.

Sealing is a step of its own rather than work in the triggers: a chain computed by every writer
would put one chain-head row lock on every payment's commit. The sealer links the rows of
finished transactions in (transaction, id) order; every transaction older than the oldest one
still running (`pg_snapshot_xmin`) is finished, so what it sealed up to that horizon never
changes under it.

Both steps are built for millions of rows: the database prints each row's canonical bytes
(Python only chains the SHA-256 while sealing), and the check recomputes every hash inside the
database, chunk by chunk, returning only the links that break something. One row costs a few
microseconds of server time and nothing on the wire (bench/audit.py measures it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from colmena.domain import audit_chain
from colmena.domain.audit_chain import GENESIS, VERSION, Break, BreakKind, LinkFacts, judge
from colmena.store.locks import lock_space

SEAL_LOCK_SPACE = lock_space("AUDS")
SEAL_BATCH = 10_000
VERIFY_BATCH = 50_000
_HORIZON = "SELECT pg_snapshot_xmin(pg_current_snapshot())"
# Sealing and checking read batch by batch along an index. The row counts the planner knows
# can be far off (audit_seals analysed empty, then filled by a catch-up of a million rows): a
# sequential scan chosen on such a guess, repeated every batch, makes a run quadratic.
_INDEXES_ONLY = "SET LOCAL enable_seqscan = off"

AuditBreak = Break


@dataclass(frozen=True)
class AuditVerdict:
    """What `verify_chain` found: ok when no break; unsealed rows are reported, not breaks
    (they are the newest rows, sealed by the next run)."""

    ok: bool
    checked: int
    breaks: list[Break] = field(default_factory=list)
    unsealed: int = 0
    head_seq: int = 0
    head_hash: bytes = GENESIS


@dataclass(frozen=True)
class AuditEvent:
    id: int
    recorded_at: datetime
    actor: str
    action: str
    subject_kind: str
    subject_id: str
    before: Any
    after: Any
    cause: str
    seq: int | None


async def attribute(conn: asyncpg.Connection, *, actor: str, cause: str) -> None:
    """Name the actor and cause of the audited changes of this transaction (call inside it).

    Transaction-local settings (`set_config(..., true)`): they end with the transaction, so a
    pooled connection never carries one operator's name into the next request.
    """
    await conn.execute(
        "SELECT set_config('colmena.audit_actor', $1, true),"
        " set_config('colmena.audit_cause', $2, true)",
        actor,
        cause,
    )


def _json_text(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(dict(value), sort_keys=True, default=str)


async def record_action(
    conn: asyncpg.Connection,
    *,
    actor: str,
    action: str,
    subject_kind: str,
    subject_id: str,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    cause: str,
) -> None:
    """Append an audit row for an operator action that changes no audited row (a requeue, a
    resend, a login). Values that are not JSON (Decimal, datetime) are stored as text."""
    # ::text::jsonb: the same statement works on connections with or without a jsonb codec.
    await conn.execute(
        "INSERT INTO audit_events (actor, action, subject_kind, subject_id, before, after, cause)"
        " VALUES ($1, $2, $3, $4, $5::text::jsonb, $6::text::jsonb, $7)",
        actor,
        action,
        subject_kind,
        subject_id,
        _json_text(before),
        _json_text(after),
        cause,
    )


# The canonical bytes of audit row `e`: the database's JSON text of its fields, in one fixed
# order. jsonb prints a value one way only (keys ordered, fixed spacing, numbers exact, never
# depending on a session setting), recorded_at goes as integer microseconds since the epoch
# (UTC by definition; exact, extract gives numeric since PostgreSQL 14), so the same row gives
# the same bytes in any session, on any server.
# Sealing and checking both use this one expression: the check recomputes every hash in the
# database and sends back only the broken links.
CANONICAL = (
    "convert_to(json_build_array(e.id, (extract(epoch FROM e.recorded_at) * 1000000)::bigint,"
    " e.actor, e.action, e.subject_kind, e.subject_id, e.before, e.after, e.cause)::text,"
    " 'UTF8')"
)

# A run's next rows: from a (xact, id) position on, along audit_events_xact_idx, so each row
# is read once however far behind the seal is. The NOT EXISTS probes the seal's index row by
# row (OFFSET 0 keeps it a probe, not an anti-join over the whole table).
_UNSEALED = (
    f"SELECT e.xact::text AS xact, e.id, {CANONICAL} AS canonical FROM audit_events e"
    " WHERE (e.xact, e.id) > ($1::text::xid8, $2::bigint)"
    " AND NOT EXISTS (SELECT 1 FROM audit_seals s WHERE s.event_id = e.id OFFSET 0)"
    " ORDER BY e.xact, e.id LIMIT $3"
)


class _SealRun:
    """One `seal` call: where it has got to, and the horizon it may store when done."""

    def __init__(self) -> None:
        self.position: tuple[int, int] | None = None
        self.horizon: int | None = None


async def _seal_batch(conn: asyncpg.Connection, run: _SealRun, limit: int) -> tuple[int, bool]:
    """Seal up to `limit` rows in one transaction: (rows sealed, whether more may wait)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, 0)", SEAL_LOCK_SPACE)
        await conn.execute(_INDEXES_ONLY)
        last = await conn.fetchrow(
            "SELECT seq, hash, horizon::text::bigint AS horizon FROM audit_seals"
            " ORDER BY seq DESC LIMIT 1"
        )
        horizon = int(await conn.fetchval(_HORIZON + "::text"))
        if run.horizon is None:
            run.horizon = horizon
        # Every row of a transaction older than the last stored horizon is sealed. A horizon
        # behind the last one means another cluster (a restore): look at every row once.
        lower = last["horizon"] if last is not None and horizon >= last["horizon"] else 0
        start = max(run.position or (0, 0), (lower, 0))
        rows = await conn.fetch(_UNSEALED, str(start[0]), start[1], limit)
        if not rows:
            return 0, False
        more = len(rows) == limit
        links = audit_chain.seal(
            [(row["id"], row["canonical"]) for row in rows],
            last_seq=last["seq"] if last is not None else 0,
            last_hash=bytes(last["hash"]) if last is not None else GENESIS,
        )
        await conn.execute(
            "INSERT INTO audit_seals (seq, event_id, prev_hash, hash, horizon)"
            " SELECT seq, event_id, prev_hash, hash, $5::text::xid8"
            " FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bytea[])"
            " AS l(seq, event_id, prev_hash, hash)",
            [link.seq for link in links],
            [link.event_id for link in links],
            [link.prev_hash for link in links],
            [link.hash for link in links],
            # Until the run is done the old bound stays: the rows it has not reached yet must
            # still be looked at. Then the horizon the run began with: a row this run passed
            # over because its transaction was still running then is of a transaction no
            # older than that (or a later sealer's, if one ran in between: it sealed below it).
            str(lower if more else max(lower, run.horizon)),
        )
        run.position = (int(rows[-1]["xact"]), rows[-1]["id"])
        return len(links), more


async def seal(
    conn: asyncpg.Connection,
    *,
    batch: int = SEAL_BATCH,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Link every audit row of a finished transaction to the chain; returns how many.

    Short transactions of `batch` rows under an advisory lock, so two sealers never interleave
    within one and writers are never waited on. Each batch goes on where the last one stopped
    along audit_events_xact_idx, so a run that catches up on millions of rows reads each once.
    `progress` is told the running total after each batch. Call outside a transaction.
    """
    run = _SealRun()
    total = 0
    while True:
        sealed, more = await _seal_batch(conn, run, batch)
        total += sealed
        if progress is not None and sealed:
            progress(total)
        if not more:
            return total


async def head(conn: asyncpg.Connection) -> tuple[int, bytes]:
    """The chain's last link (seq, hash); (0, GENESIS) when nothing is sealed. An export that
    states it lets anyone holding the export catch a chain later rebuilt from that point."""
    row = await conn.fetchrow("SELECT seq, hash FROM audit_seals ORDER BY seq DESC LIMIT 1")
    return (0, GENESIS) if row is None else (row["seq"], bytes(row["hash"]))


async def _resolve_positions(conn: asyncpg.Connection, breaks: list[Break]) -> list[Break]:
    """Name, for each out-of-order link, the link it was really sealed after."""
    wanted = [b.prev_hash for b in breaks if b.kind is BreakKind.OUT_OF_ORDER and b.prev_hash]
    if not wanted:
        return breaks
    rows = await conn.fetch("SELECT hash, seq FROM audit_seals WHERE hash = ANY($1)", wanted)
    seq_of = {bytes(row["hash"]): row["seq"] for row in rows}
    resolved = []
    for found in breaks:
        if found.kind is BreakKind.OUT_OF_ORDER and found.prev_hash is not None:
            after = seq_of.get(found.prev_hash)
            where = f"link {after}" if after is not None else "a link no longer in the chain"
            found = Break(
                found.kind,
                found.seq,
                found.event_id,
                f"{found.detail}; it was sealed after {where}",
                found.prev_hash,
            )
        resolved.append(found)
    return resolved


# One chunk of the check, all of it in the database: each link of the next `$3` after seq $1,
# its row's hash recomputed, its seq and prev_hash compared with the link before it (the
# previous chunk's last one, $1 and $2, for the first). Only the links that break something
# come back, and the chunk's last link, where the next chunk starts.
_CHECK = f"""
SELECT seq, event_id, prev_hash, hash, prev_seq, present, intact, continues, position, last
FROM (
    SELECT s.seq, s.event_id, s.prev_hash, s.hash,
           lag(s.seq, 1, $1::bigint) OVER w AS prev_seq,
           s.prev_hash = lag(s.hash, 1, $2::bytea) OVER w AS continues,
           e.canonical IS NOT NULL AS present,
           coalesce(sha256($4::bytea || s.prev_hash || e.canonical) = s.hash, false) AS intact,
           row_number() OVER w AS position,
           lead(s.seq) OVER w IS NULL AS last
      FROM (SELECT seq, event_id, prev_hash, hash FROM audit_seals
             WHERE seq > $1 ORDER BY seq LIMIT $3) s
      -- OFFSET 0: a probe of the row's primary key per link, never a hash of the whole table.
      LEFT JOIN LATERAL (SELECT {CANONICAL} AS canonical FROM audit_events e
                          WHERE e.id = s.event_id OFFSET 0) e ON true
    WINDOW w AS (ORDER BY s.seq)
) link
WHERE last OR seq <> prev_seq + 1 OR NOT present OR NOT intact OR NOT continues
"""


@dataclass
class _Walk:
    """How far a check has walked the chain: links checked, the last one, the breaks so far."""

    checked: int = 0
    head_seq: int = 0
    head_hash: bytes = GENESIS
    breaks: list[Break] = field(default_factory=list)


async def _check_chunk(conn: asyncpg.Connection, walk: _Walk) -> bool:
    """Check the next chunk of links; False when there was none."""
    rows = await conn.fetch(_CHECK, walk.head_seq, walk.head_hash, VERIFY_BATCH, VERSION)
    if not rows:
        return False
    for row in rows:
        walk.breaks += judge(
            LinkFacts(
                seq=row["seq"],
                event_id=row["event_id"],
                prev_hash=bytes(row["prev_hash"]),
                prev_seq=row["prev_seq"],
                present=row["present"],
                intact=row["intact"],
                continues=row["continues"],
            )
        )
    last = rows[-1]
    walk.checked += last["position"]
    walk.head_seq, walk.head_hash = last["seq"], bytes(last["hash"])
    return True


async def _unsealed(conn: asyncpg.Connection) -> tuple[int, list[Break]]:
    """(rows waiting for the next seal, a break for each row behind the seal)."""
    horizon = await conn.fetchval("SELECT horizon FROM audit_seals ORDER BY seq DESC LIMIT 1")
    if horizon is not None and horizon > await conn.fetchval(_HORIZON):
        horizon = None  # another cluster (a restore): its transaction ids start afresh
    # A row of a transaction older than the seal's horizon should have been sealed: it was
    # written into the sealed past (or its link deleted with the row kept).
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE pending) AS pending,"
        " coalesce(array_agg(id ORDER BY id) FILTER (WHERE NOT pending), '{}') AS behind"
        " FROM (SELECT e.id, e.xact >= coalesce($1::text::xid8, '0'::xid8) AS pending"
        " FROM audit_events e"
        " WHERE NOT EXISTS (SELECT 1 FROM audit_seals s WHERE s.event_id = e.id)) u",
        None if horizon is None else str(horizon),
    )
    behind = [
        Break(
            BreakKind.UNSEALED_BEHIND,
            None,
            event_id,
            "not sealed, though older than the sealed rows (inserted behind the seal,"
            " or its link deleted)",
        )
        for event_id in row["behind"]
    ]
    return row["pending"], behind


async def verify_chain(
    conn: asyncpg.Connection,
    *,
    seal_first: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> AuditVerdict:
    """Check every sealed row against the chain, row by row (sealing what is unsealed first,
    unless `seal_first` is False: a read-only check). `progress` is told (links checked, links
    in all) after every chunk. Call outside a transaction."""
    if seal_first:
        await seal(conn)
    walk = _Walk()
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        # One snapshot for the whole check. The whole-table questions first (a hash join is
        # their best plan), then the chunks along the indexes.
        total = await conn.fetchval("SELECT count(*) FROM audit_seals") if progress else 0
        pending, behind = await _unsealed(conn)
        # The check's cost is its expressions, not its plan: compiling them per chunk is lost.
        await conn.execute(_INDEXES_ONLY + "; SET LOCAL jit = off")
        while await _check_chunk(conn, walk):
            if progress is not None:
                progress(walk.checked, max(total, walk.checked))
        breaks = await _resolve_positions(conn, walk.breaks) + behind
    return AuditVerdict(
        ok=not breaks,
        checked=walk.checked,
        breaks=breaks,
        unsealed=pending,
        head_seq=walk.head_seq,
        head_hash=walk.head_hash,
    )


async def list_events(
    conn: asyncpg.Connection,
    *,
    subject_kind: str | None = None,
    subject_id: str | None = None,
    actor: str | None = None,
    limit: int = 50,
) -> list[AuditEvent]:
    """The newest audit rows, optionally of one subject (kind, and id) or one actor."""
    rows = await conn.fetch(
        "SELECT e.id, e.recorded_at, e.actor, e.action, e.subject_kind, e.subject_id,"
        " e.before, e.after, e.cause, s.seq FROM audit_events e"
        " LEFT JOIN audit_seals s ON s.event_id = e.id"
        " WHERE ($1::text IS NULL OR e.subject_kind = $1)"
        " AND ($2::text IS NULL OR e.subject_id = $2)"
        " AND ($3::text IS NULL OR e.actor = $3)"
        " ORDER BY e.id DESC LIMIT $4",
        subject_kind,
        subject_id,
        actor,
        limit,
    )
    return [AuditEvent(**dict(row)) for row in rows]
