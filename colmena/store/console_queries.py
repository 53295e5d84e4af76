"""Read queries of the operator console: overview counts, searches, a payment's timeline.

Lists are keyset pages (`before` the last key shown, newest first), never OFFSET: a page costs
the same on the first screen as on the thousandth, with 100,000 payments or ten. Each list asks
for one row more than it shows, so the caller knows whether there is a next page. The actions
(resend, revoke, requeue...) use each domain's own store module, as the CLI does.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from colmena.domain.checkout import PROVIDERS
from colmena.domain.rates import PUBLISHED
from colmena.store import licenses, payments
from colmena.store.invoices import InvoiceSummary
from colmena.store.licenses import EmailRecord
from colmena.store.payments import Payment

# Audit rows of a payment's timeline: the subject kinds the audit trail names its parts by.
_INVOICE_PARTS = ("invoice", "invoice_cancellation")


@dataclass(frozen=True)
class TodayCounts:
    payments: int
    approved: int
    licenses: int
    invoices: int
    stamped: int


async def table_exists(conn: asyncpg.Connection, name: str) -> bool:
    found: bool = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name)
    return found


async def counts_since(conn: asyncpg.Connection, start: datetime) -> TodayCounts:
    """Payments created, approved; licenses issued; invoices created, stamped, since `start`."""
    row = await conn.fetchrow(
        """
        SELECT (SELECT count(*) FROM payments WHERE created_at >= $1) AS payments,
               (SELECT count(*) FROM payments WHERE created_at >= $1
                  AND approved_at IS NOT NULL) AS approved,
               (SELECT count(*) FROM licenses WHERE issued_at >= $1) AS licenses,
               (SELECT count(*) FROM invoices WHERE created_at >= $1) AS invoices,
               (SELECT count(*) FROM invoices WHERE fecha_timbrado >= $1) AS stamped
        """,
        start,
    )
    return TodayCounts(**dict(row))


async def payments_per_hour(
    conn: asyncpg.Connection, start: datetime, end: datetime
) -> dict[datetime, int]:
    """Payments created per UTC hour in [start, end), keyed by the hour's start."""
    rows = await conn.fetch(
        """
        SELECT date_trunc('hour', created_at, 'UTC') AS hour, count(*) AS n
        FROM payments WHERE created_at >= $1 AND created_at < $2 GROUP BY 1
        """,
        start,
        end,
    )
    return {row["hour"]: row["n"] for row in rows}


async def daily_rates(
    conn: asyncpg.Connection, series: list[tuple[str, str]], first: date
) -> dict[tuple[str, str], list[tuple[date, Decimal]]]:
    """The last published value of each (source, pair) per effective date from `first` on."""
    rows = await conn.fetch(
        """
        SELECT DISTINCT ON (source, pair, effective_date) source, pair, effective_date, value
        FROM rates
        WHERE status = ANY($1::text[]) AND effective_date >= $2
          AND (source, pair) IN (SELECT * FROM unnest($3::text[], $4::text[]))
        ORDER BY source, pair, effective_date, id DESC
        """,
        list(PUBLISHED),
        first,
        [source for source, _ in series],
        [pair for _, pair in series],
    )
    found: dict[tuple[str, str], list[tuple[date, Decimal]]] = {key: [] for key in series}
    for row in rows:
        found[(row["source"], row["pair"])].append((row["effective_date"], row["value"]))
    return found


# Payments ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentSearch:
    """What a search box names: colmena's payment id, the provider's, an email or an order."""

    text: str

    @property
    def email(self) -> str | None:
        return self.text if "@" in self.text else None

    @property
    def order_id(self) -> uuid.UUID | None:
        try:
            return uuid.UUID(self.text)
        except ValueError:
            return None

    @property
    def payment_id(self) -> int | None:
        return int(self.text) if self.text.isascii() and self.text.isdigit() else None


_PAYMENT_COLUMNS = (
    "id, provider, provider_payment_id, amount_minor, currency, customer_email, customer_locale, "
    "tenant_ref, product_ref, product_kind, metadata, status, status_at, approved_at, created_at, "
    "updated_at"
)


async def search_payments(
    conn: asyncpg.Connection,
    *,
    search: PaymentSearch | None,
    status: str | None,
    before_id: int | None,
    limit: int,
) -> list[Payment]:
    """Newest first, `limit + 1` rows below `before_id`; every form of search hits an index
    (the id, the (provider, provider id) key per provider, the order id, the email)."""
    where = ["($1::bigint IS NULL OR id < $1)", "($2::text IS NULL OR status = $2)"]
    args: list[Any] = [before_id, status]
    if search is not None:
        ways = ["(provider = ANY($3::text[]) AND provider_payment_id = $4)"]
        args += [list(PROVIDERS), search.text]
        if search.payment_id is not None and search.payment_id < 2**63:
            args.append(search.payment_id)
            ways.append(f"id = ${len(args)}")
        if search.email is not None:
            args.append(search.email)
            ways.append(f"lower(customer_email) = lower(${len(args)})")
        if search.order_id is not None:
            args.append(search.order_id)
            ways.append(f"order_id = ${len(args)}")
        where.append("(" + " OR ".join(ways) + ")")
    args.append(limit + 1)
    rows = await conn.fetch(
        f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE {' AND '.join(where)} "
        f"ORDER BY id DESC LIMIT ${len(args)}",
        *args,
    )
    return [Payment(**dict(row)) for row in rows]


@dataclass(frozen=True)
class TimelineEvent:
    """One provider event as it reached colmena, with its place in the provider's order."""

    id: int
    source: str
    status: str
    provider_at: datetime
    applied: bool
    reason: str | None
    recorded_at: datetime
    provider_rank: int
    event_key: str | None
    kind: str | None


@dataclass(frozen=True)
class AuditRow:
    id: int
    recorded_at: datetime
    actor: str
    action: str
    subject_kind: str
    subject_id: str
    cause: str | None


@dataclass(frozen=True)
class TimelineLicense:
    id: uuid.UUID
    status: str
    issued_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    suspended_at: datetime | None
    customer_email: str
    emails: tuple[EmailRecord, ...]


@dataclass(frozen=True)
class TimelineInvoice:
    id: int
    cfdi_type: str
    status: str
    label: str
    uuid: str | None
    total: Decimal | None
    currency: str | None
    created_at: datetime
    fecha_timbrado: datetime | None
    emailed_at: datetime | None
    receiver_email: str | None
    cancellation_state: str | None
    cancellation_requested_at: datetime | None


@dataclass(frozen=True)
class Timeline:
    payment: Payment
    events: tuple[TimelineEvent, ...]
    license: TimelineLicense | None
    invoices: tuple[TimelineInvoice, ...]
    audit: tuple[AuditRow, ...] | None  # None: no audit trail installed
    order_id: uuid.UUID | None


async def _events(conn: asyncpg.Connection, payment_id: int) -> tuple[TimelineEvent, ...]:
    rows = await conn.fetch(
        """
        SELECT e.id, e.source, e.status, e.provider_at, e.applied, e.reason, e.recorded_at,
               rank() OVER (ORDER BY e.provider_at, e.id) AS provider_rank,
               i.event_key, i.kind
        FROM payment_events e LEFT JOIN inbox i ON i.id = e.inbox_id
        WHERE e.payment_id = $1 ORDER BY e.id
        """,
        payment_id,
    )
    return tuple(TimelineEvent(**dict(row)) for row in rows)


async def _license(conn: asyncpg.Connection, payment_id: int) -> TimelineLicense | None:
    row = await conn.fetchrow(
        """
        SELECT id, issued_at, expires_at, revoked_at, suspended_at, customer_email,
               CASE WHEN revoked_at IS NOT NULL THEN 'revoked'
                    WHEN suspended_at IS NOT NULL THEN 'suspended'
                    WHEN expires_at IS NOT NULL AND expires_at <= now() THEN 'expired'
                    ELSE 'active' END AS status
        FROM licenses WHERE payment_id = $1
        """,
        payment_id,
    )
    if row is None:
        return None
    emails = await licenses.emails_of(conn, row["id"])
    return TimelineLicense(**dict(row), emails=tuple(emails))


async def _invoices(conn: asyncpg.Connection, payment_id: int) -> tuple[TimelineInvoice, ...]:
    rows = await conn.fetch(
        """
        SELECT i.id, i.cfdi_type, i.status, i.series || i.folio AS label, i.uuid, i.total,
               i.currency, i.created_at, i.fecha_timbrado, i.emailed_at, i.receiver_email,
               c.state AS cancellation_state, c.requested_at AS cancellation_requested_at
        FROM invoices i LEFT JOIN invoice_cancellations c ON c.invoice_id = i.id
        WHERE (i.payment_id = $1 AND i.cfdi_type = 'I') OR (i.payment_id = $1 AND i.cfdi_type = 'E')
        ORDER BY i.id
        """,
        payment_id,
    )
    return tuple(TimelineInvoice(**dict(row)) for row in rows)


async def audit_of(
    conn: asyncpg.Connection, subjects: list[tuple[str, str]], *, limit: int = 200
) -> tuple[AuditRow, ...] | None:
    """Audit rows naming any of `subjects` ((kind, id) pairs), oldest first; None when the
    audit trail is not installed."""
    if not await table_exists(conn, "audit_events"):
        return None
    rows = await conn.fetch(
        """
        SELECT id, recorded_at, actor, action, subject_kind, subject_id, cause
        FROM audit_events
        WHERE (subject_kind, subject_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
        ORDER BY id LIMIT $3
        """,
        [kind for kind, _ in subjects],
        [ident for _, ident in subjects],
        limit,
    )
    return tuple(AuditRow(**dict(row)) for row in rows)


async def timeline(conn: asyncpg.Connection, payment_id: int) -> Timeline | None:
    """Everything that happened to one payment, each part in its own order."""
    payment = await payments.get(conn, payment_id)
    if payment is None:
        return None
    license = await _license(conn, payment_id)
    invoices = await _invoices(conn, payment_id)
    order_id = await conn.fetchval("SELECT order_id FROM payments WHERE id = $1", payment_id)
    subjects = [("payment", str(payment_id))]
    if license is not None:
        subjects.append(("license", str(license.id)))
    if order_id is not None:
        subjects.append(("order", str(order_id)))
    subjects += [(kind, str(invoice.id)) for invoice in invoices for kind in _INVOICE_PARTS]
    return Timeline(
        payment=payment,
        events=await _events(conn, payment_id),
        license=license,
        invoices=invoices,
        audit=await audit_of(conn, subjects),
        order_id=order_id,
    )


# Licenses ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LicenseRow:
    id: uuid.UUID
    payment_id: int
    product_ref: str
    edition: str
    seats: int
    customer_email: str
    issued_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    suspended_at: datetime | None
    provider: str
    provider_payment_id: str
    last_email_sent_at: datetime | None


async def search_licenses(
    conn: asyncpg.Connection,
    *,
    text: str | None,
    before_payment: int | None,
    limit: int,
) -> list[LicenseRow]:
    """Licenses newest payment first (licenses.payment_id is unique and indexed: the key),
    found by license id, customer email or payment (colmena's id or the provider's); each way
    of finding is its own indexed branch, joined before the page is cut."""
    args: list[Any] = [before_payment, limit + 1]
    found = ""
    if text is not None:
        args += [text, list(PROVIDERS)]
        ways = [
            "SELECT id FROM licenses WHERE lower(customer_email) = lower($3)",
            "SELECT l2.id FROM licenses l2 JOIN payments p2 ON p2.id = l2.payment_id "
            "WHERE p2.provider = ANY($4::text[]) AND p2.provider_payment_id = $3",
        ]
        try:
            args.append(uuid.UUID(text))
            ways.append(f"SELECT id FROM licenses WHERE id = ${len(args)}")
        except ValueError:
            pass
        if text.isascii() and text.isdigit() and int(text) < 2**63:
            args.append(int(text))
            ways.append(f"SELECT id FROM licenses WHERE payment_id = ${len(args)}")
        found = " AND l.id IN (" + " UNION ".join(ways) + ")"
    rows = await conn.fetch(
        f"""
        SELECT l.id, l.payment_id, l.product_ref, l.edition, l.seats, l.customer_email,
               l.issued_at, l.expires_at, l.revoked_at, l.suspended_at,
               p.provider, p.provider_payment_id,
               (SELECT max(sent_at) FROM license_emails e WHERE e.license_id = l.id)
                 AS last_email_sent_at
        FROM licenses l JOIN payments p ON p.id = l.payment_id
        WHERE ($1::bigint IS NULL OR l.payment_id < $1){found}
        ORDER BY l.payment_id DESC LIMIT $2
        """,
        *args,
    )
    return [LicenseRow(**dict(row)) for row in rows]


# Invoices ------------------------------------------------------------------------------------


async def list_invoices(
    conn: asyncpg.Connection,
    *,
    status: str | None,
    payment_id: int | None,
    before_id: int | None,
    limit: int,
) -> list[InvoiceSummary]:
    """Invoices newest first (the (status, id) index serves the status filter)."""
    rows = await conn.fetch(
        """
        SELECT id, payment_id, status, series, folio, receiver_rfc, total, currency, uuid,
               attempts, failure_code, emailed_at, created_at
        FROM invoices
        WHERE ($1::text IS NULL OR status = $1) AND ($2::bigint IS NULL OR payment_id = $2)
          AND ($3::bigint IS NULL OR id < $3)
        ORDER BY id DESC LIMIT $4
        """,
        status,
        payment_id,
        before_id,
        limit + 1,
    )
    return [InvoiceSummary(**dict(row)) for row in rows]


# Rates ---------------------------------------------------------------------------------------


async def rate_history(
    conn: asyncpg.Connection,
    *,
    source: str | None,
    status: str | None,
    before_id: int | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Every kept rate, suspects and rejections included, newest first."""
    return await conn.fetch(
        """
        SELECT id, source, pair, value, buy, sell, effective_date, fetched_at, last_seen_at,
               status, reason, decided_by, decided_at, sandbox
        FROM rates
        WHERE ($1::text IS NULL OR source = $1) AND ($2::text IS NULL OR status = $2)
          AND ($3::bigint IS NULL OR id < $3)
        ORDER BY id DESC LIMIT $4
        """,
        source,
        status,
        before_id,
        limit + 1,
    )


# Tenants -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantRow:
    id: str
    email: str
    plan: str
    desired: str | None
    observed: str | None
    healthy: bool | None
    crashloop: bool | None
    restarts_total: int | None
    observed_at: datetime | None


async def list_tenants(
    conn: asyncpg.Connection, *, state: str | None, after_id: str | None, limit: int
) -> list[TenantRow]:
    """Tenants by id with their bot's state; `state` as `colmena status` counts bots
    (observed, or `unhealthy` for a running bot without a heartbeat, or `crashloop`)."""
    return [
        TenantRow(**dict(row))
        for row in await conn.fetch(
            """
            SELECT t.id, t.email, t.plan, b.desired, b.observed, b.healthy, b.crashloop,
                   b.restarts_total, b.observed_at
            FROM tenants t LEFT JOIN bots b ON b.tenant_id = t.id
            WHERE ($1::text IS NULL OR t.id > $1)
              AND ($2::text IS NULL
                   OR ($2 = 'crashloop' AND b.crashloop)
                   OR ($2 = 'unhealthy' AND b.observed = 'running' AND b.healthy IS FALSE)
                   OR ($2 NOT IN ('crashloop', 'unhealthy') AND b.observed = $2
                       AND NOT (b.observed = 'running' AND b.healthy IS FALSE)))
            ORDER BY t.id LIMIT $3
            """,
            after_id,
            state,
            limit + 1,
        )
    ]


@dataclass(frozen=True)
class CommandRow:
    id: uuid.UUID
    kind: str
    requested_by: str
    status: str
    reason: str | None
    created_at: datetime
    finished_at: datetime | None


async def recent_commands(
    conn: asyncpg.Connection, tenant_id: str, *, limit: int = 10
) -> list[CommandRow]:
    rows = await conn.fetch(
        "SELECT id, kind, requested_by, status, reason, created_at, finished_at "
        "FROM bot_commands WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT $2",
        tenant_id,
        limit,
    )
    return [CommandRow(**dict(row)) for row in rows]


@dataclass(frozen=True)
class PlanChangeRow:
    id: int
    plan: str
    active: bool
    source: str
    provider_at: datetime
    outcome: str
    reason: str
    recorded_at: datetime


async def recent_plan_changes(
    conn: asyncpg.Connection, tenant_id: str, *, limit: int = 10
) -> list[PlanChangeRow]:
    rows = await conn.fetch(
        "SELECT id, plan, active, source, provider_at, outcome, reason, recorded_at "
        "FROM plan_changes WHERE tenant_ref = $1 ORDER BY provider_at DESC, id DESC LIMIT $2",
        tenant_id,
        limit,
    )
    return [PlanChangeRow(**dict(row)) for row in rows]
