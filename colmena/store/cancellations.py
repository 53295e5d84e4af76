"""Queries on CFDI cancellations (migration 0017): one row per invoice, moved by the PAC's
answer and the SAT's status service (the rules are `colmena.domain.cancellation`'s)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

import asyncpg

from colmena.domain.cancellation import OPEN_STATES, CancellationRequest, SatStatus, State

_COLUMNS = (
    "invoice_id, state, motive, replacement_uuid, needs_acceptance, source, requested_at, "
    "filed_at, pac_code, pac_message, acuse, request_attempts, sat_codigo, sat_estado, "
    "sat_es_cancelable, sat_estatus, polls, next_poll_at, last_error, finished_at, updated_at"
)
_OPEN = [str(state) for state in OPEN_STATES]


@dataclass(frozen=True)
class CancellationRecord:
    invoice_id: int
    state: State
    motive: str
    replacement_uuid: str | None
    needs_acceptance: bool
    source: str
    requested_at: dt.datetime
    filed_at: dt.datetime | None
    pac_code: str | None
    pac_message: str | None
    acuse: bytes | None
    request_attempts: int
    sat_codigo: str | None
    sat_estado: str | None
    sat_es_cancelable: str | None
    sat_estatus: str | None
    polls: int
    next_poll_at: dt.datetime | None
    last_error: str | None
    finished_at: dt.datetime | None
    updated_at: dt.datetime


def _record(row: asyncpg.Record) -> CancellationRecord:
    values = dict(row)
    values["state"] = State(values["state"])
    return CancellationRecord(**values)


async def get(
    conn: asyncpg.Connection, invoice_id: int, *, for_update: bool = False
) -> CancellationRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM invoice_cancellations WHERE invoice_id = $1{lock}", invoice_id
    )
    return _record(row) if row is not None else None


async def request(
    conn: asyncpg.Connection,
    invoice_id: int,
    request: CancellationRequest,
    *,
    needs_acceptance: bool,
    source: str,
    now: dt.datetime,
) -> CancellationRecord:
    """Record a request (a new one, or again after a rejection or refusal), to be filed from
    `now` on."""
    row = await conn.fetchrow(
        f"""
        INSERT INTO invoice_cancellations AS c
            (invoice_id, motive, replacement_uuid, needs_acceptance, source, requested_at,
             next_poll_at)
        VALUES ($1, $2, $3, $4, $5, $6, $6)
        ON CONFLICT (invoice_id) DO UPDATE SET state = 'requested', motive = $2,
            replacement_uuid = $3, needs_acceptance = $4, source = $5, requested_at = $6,
            filed_at = NULL, pac_code = NULL, pac_message = NULL, acuse = NULL,
            sat_codigo = NULL, sat_estado = NULL, sat_es_cancelable = NULL, sat_estatus = NULL,
            polls = 0, next_poll_at = $6, last_error = NULL, finished_at = NULL,
            updated_at = now()
        RETURNING {_COLUMNS}
        """,
        invoice_id,
        request.motive.value,
        request.replacement_uuid,
        needs_acceptance,
        source,
        now,
    )
    return _record(row)


async def begin_filing(conn: asyncpg.Connection, invoice_id: int) -> None:
    """Count a request to the PAC before making it."""
    await conn.execute(
        "UPDATE invoice_cancellations SET request_attempts = request_attempts + 1, "
        "updated_at = now() WHERE invoice_id = $1",
        invoice_id,
    )


async def mark_filed(
    conn: asyncpg.Connection,
    invoice_id: int,
    *,
    code: str,
    acuse: bytes | None,
    next_poll_at: dt.datetime,
) -> None:
    """The PAC filed the request with the SAT; the status service says what became of it."""
    await conn.execute(
        """
        UPDATE invoice_cancellations SET state = 'in_process', filed_at = now(), pac_code = $2,
            pac_message = NULL, acuse = $3, last_error = NULL, next_poll_at = $4,
            updated_at = now()
        WHERE invoice_id = $1 AND state = 'requested'
        """,
        invoice_id,
        code,
        acuse,
        next_poll_at,
    )


async def mark_refused(
    conn: asyncpg.Connection, invoice_id: int, *, code: str, message: str
) -> None:
    """A refusal retrying cannot change (the PAC's or the SAT's): no more polls."""
    await conn.execute(
        """
        UPDATE invoice_cancellations SET state = 'refused', pac_code = $2, pac_message = $3,
            next_poll_at = NULL, finished_at = now(), updated_at = now()
        WHERE invoice_id = $1
        """,
        invoice_id,
        code[:100],
        message[:2000],
    )


async def note_error(
    conn: asyncpg.Connection, invoice_id: int, *, message: str, next_poll_at: dt.datetime
) -> None:
    """Why the last call failed (PAC or status service unreachable); tried again later."""
    await conn.execute(
        "UPDATE invoice_cancellations SET last_error = $2, next_poll_at = $3, updated_at = now() "
        "WHERE invoice_id = $1",
        invoice_id,
        message[:2000],
        next_poll_at,
    )


async def record_status(
    conn: asyncpg.Connection,
    invoice_id: int,
    *,
    state: State,
    status: SatStatus,
    next_poll_at: dt.datetime | None,
    reason: str | None = None,
) -> None:
    """The status service's answer and the state it leads to; a final state stops polling."""
    final = state not in OPEN_STATES
    await conn.execute(
        """
        UPDATE invoice_cancellations SET state = $2, sat_codigo = $3, sat_estado = $4,
            sat_es_cancelable = $5, sat_estatus = $6, polls = polls + 1,
            next_poll_at = CASE WHEN $7::boolean THEN NULL ELSE $8::timestamptz END,
            finished_at = CASE WHEN $7::boolean THEN now() ELSE NULL END,
            pac_message = CASE WHEN $2 = 'refused' THEN $9::text ELSE pac_message END,
            last_error = NULL, updated_at = now()
        WHERE invoice_id = $1
        """,
        invoice_id,
        str(state),
        status.codigo_estatus,
        status.estado,
        status.es_cancelable,
        status.estatus_cancelacion,
        final,
        next_poll_at,
        reason,
    )


async def due(conn: asyncpg.Connection, *, now: dt.datetime, limit: int = 100) -> list[int]:
    """Open cancellations whose next call is due, soonest first."""
    rows = await conn.fetch(
        "SELECT invoice_id FROM invoice_cancellations WHERE state = ANY($1::text[]) "
        "AND next_poll_at <= $2 ORDER BY next_poll_at LIMIT $3",
        _OPEN,
        now,
        limit,
    )
    return [row["invoice_id"] for row in rows]


async def stamped_after_refund(conn: asyncpg.Connection) -> list[int]:
    """Invoices a refund marked for cancellation whose stamp arrived afterwards (an attempt was
    already on its way to the PAC) and whose cancellation is not requested yet."""
    rows = await conn.fetch(
        """
        SELECT i.id FROM invoices i
        WHERE i.status = 'cancellation_requested' AND i.uuid IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM invoice_cancellations c WHERE c.invoice_id = i.id)
        ORDER BY i.id
        """
    )
    return [row["id"] for row in rows]


async def awaiting_acceptance_since(conn: asyncpg.Connection) -> list[dt.datetime]:
    """When each cancellation now waiting for its receiver was requested."""
    rows = await conn.fetch(
        "SELECT requested_at FROM invoice_cancellations WHERE state = 'awaiting_acceptance'"
    )
    return [row["requested_at"] for row in rows]


@dataclass(frozen=True)
class StampedInvoice:
    """What `invoices verify` compares: an invoice stamped in the period and its cancellation."""

    invoice_id: int
    label: str
    uuid: str
    total: Decimal | None
    stamped_xml: bytes
    cancellation: State | None


async def stamped_between(
    conn: asyncpg.Connection, *, start: dt.datetime, end: dt.datetime
) -> list[StampedInvoice]:
    """Every invoice stamped in [start, end), with its cancellation state if it has one."""
    rows = await conn.fetch(
        """
        SELECT i.id, i.series || i.folio AS label, i.uuid, i.total, i.stamped_xml, c.state
        FROM invoices i LEFT JOIN invoice_cancellations c ON c.invoice_id = i.id
        WHERE i.uuid IS NOT NULL AND i.stamped_xml IS NOT NULL
            AND i.fecha_timbrado >= $1 AND i.fecha_timbrado < $2
        ORDER BY i.fecha_timbrado, i.id
        """,
        start,
        end,
    )
    return [
        StampedInvoice(
            invoice_id=row["id"],
            label=row["label"],
            uuid=row["uuid"],
            total=row["total"],
            stamped_xml=row["stamped_xml"],
            cancellation=State(row["state"]) if row["state"] is not None else None,
        )
        for row in rows
    ]
