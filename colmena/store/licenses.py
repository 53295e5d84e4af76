"""Queries on licenses, their delivery emails, download links and the download log.

Times that decide whether a link works (expiry, "now") are the database's, so the ingress and
the workers never disagree because of clock skew between machines.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from colmena.domain.licensing import License
from colmena.store.payments import Payment, payment_from, qualified_columns

_LICENSE_COLUMNS = (
    "id, payment_id, product_ref, edition, customer_email, customer_locale, seats, issued_at, "
    "expires_at, license_key, package_sha256, package_size, revoked_at, revoked_reason, "
    "suspended_at, suspended_reason"
)


@dataclass(frozen=True)
class LicenseRecord:
    id: uuid.UUID
    payment_id: int
    product_ref: str
    edition: str
    customer_email: str
    customer_locale: str | None
    seats: int
    issued_at: datetime
    expires_at: datetime | None
    license_key: str
    # The package the newest email's link downloads, as the worker assembled it when sending.
    package_sha256: str | None
    package_size: int | None
    revoked_at: datetime | None
    revoked_reason: str | None
    # Set while the payment is disputed: links do not work and emails wait, until the dispute
    # is won (cleared) or lost (the license is revoked).
    suspended_at: datetime | None
    suspended_reason: str | None


@dataclass(frozen=True)
class PendingEmail:
    id: int
    license: LicenseRecord
    sent: bool
    superseded: bool
    # This worker now holds the email's sending lease; False with nothing above to explain it
    # means another worker holds it, for about `lease_left_s` more.
    claimed: bool
    lease_left_s: float
    # What the payment charged, for the email to say.
    amount_minor: int
    currency: str


@dataclass(frozen=True)
class LicenseOverview:
    """A license with its payment, its newest email and its newest link: what an operator
    needs to choose between `license resend` and `license revoke`."""

    license: LicenseRecord
    provider: str
    provider_payment_id: str
    amount_minor: int
    currency: str
    email: EmailRecord | None
    link: LinkRecord | None


@dataclass(frozen=True)
class EmailRecord:
    id: int
    reason: str
    requested_at: datetime
    attempts: int
    last_error: str | None
    sent_at: datetime | None
    superseded_at: datetime | None


@dataclass(frozen=True)
class LinkRecord:
    """A download link; ``state`` as in `LinkView`, whether or not it was ever emailed."""

    id: int
    email_id: int | None
    created_at: datetime
    expires_at: datetime
    used: int
    max_downloads: int
    emailed_at: datetime | None
    state: str


@dataclass(frozen=True)
class NewLink:
    id: int
    expires_at: datetime
    max_downloads: int


@dataclass(frozen=True)
class LinkView:
    """What a token leads to. ``state``: usable, used, expired, replaced, suspended or revoked. The
    license's key and recorded package digest let any ingress assemble and check the package."""

    id: int
    license_id: uuid.UUID
    product_ref: str
    edition: str
    state: str
    expires_at: datetime
    license_key: str
    package_sha256: str | None


_QUALIFIED_LICENSE_COLUMNS = ", ".join("l." + c.strip() for c in _LICENSE_COLUMNS.split(","))
_EMAIL_FIELDS = tuple(EmailRecord.__dataclass_fields__)
_EMAIL_COLUMNS = ", ".join(_EMAIL_FIELDS)


def _license(row: asyncpg.Record) -> LicenseRecord:
    return LicenseRecord(**{key: row[key] for key in LicenseRecord.__dataclass_fields__})


async def get(conn: asyncpg.Connection, license_id: uuid.UUID) -> LicenseRecord | None:
    row = await conn.fetchrow(f"SELECT {_LICENSE_COLUMNS} FROM licenses WHERE id = $1", license_id)
    return _license(row) if row else None


async def get_by_payment(conn: asyncpg.Connection, payment_id: int) -> LicenseRecord | None:
    row = await conn.fetchrow(
        f"SELECT {_LICENSE_COLUMNS} FROM licenses WHERE payment_id = $1", payment_id
    )
    return _license(row) if row else None


@dataclass(frozen=True)
class Delivery:
    """What `deliver_license` finds under the payment's row lock: the payment, and its license
    and purchase email when they were issued already (a redelivered message)."""

    payment: Payment
    license_id: uuid.UUID | None
    email_id: int | None


async def lock_for_delivery(conn: asyncpg.Connection, payment_id: int) -> Delivery | None:
    """Lock the payment row for the caller's transaction and say whether its license exists, in
    one statement; None when the payment does not exist. The lock makes one license per payment
    however many deliveries race (UNIQUE (payment_id) backs it)."""
    row = await conn.fetchrow(
        f"""
        SELECT {qualified_columns("p")}, l.id AS license_id, e.id AS email_id
        FROM payments p
            LEFT JOIN licenses l ON l.payment_id = p.id
            LEFT JOIN license_emails e ON e.license_id = l.id AND e.reason = 'purchase'
        WHERE p.id = $1
        FOR UPDATE OF p
        """,
        payment_id,
    )
    if row is None:
        return None
    return Delivery(
        payment=payment_from(row), license_id=row["license_id"], email_id=row["email_id"]
    )


@dataclass(frozen=True)
class LinkDraft:
    """A download link to store: the SHA-256 of its token (the token itself goes only into the
    email), how long it lives and how often it downloads."""

    token_sha256: bytes
    ttl_s: float
    max_downloads: int


@dataclass(frozen=True)
class Issued:
    license: LicenseRecord
    email_id: int
    link: NewLink


async def issue(
    conn: asyncpg.Connection,
    license: License,
    *,
    payment: Payment,
    locale: str | None,
    key: str,
    package: tuple[str, int],
    link: LinkDraft,
    lease_s: float,
) -> Issued | None:
    """Store an issued license, its package digest and size, its purchase email (its sending
    lease held by the caller, its first attempt counted) and that email's link, in one
    statement: the first delivery's whole write is one round trip. The statement locks
    ``payment``'s row until it ends (or the caller's transaction does), which orders it with a
    refund or dispute that locks the row to revoke or suspend the license.

    None, and nothing written, when the payment is no longer as the caller read it (its status
    or `updated_at` differ: a refund, a dispute or a later event changed it since), or when it
    has its license already (a concurrent delivery issued it after the caller read). The caller
    then reads the payment again under its lock and decides anew."""
    sha256, size = package
    row = await conn.fetchrow(
        f"""
        WITH as_read AS (
            SELECT id FROM payments WHERE id = $2 AND status = $17 AND updated_at = $18
            FOR UPDATE
        ), issued AS (
            INSERT INTO licenses (id, payment_id, product_ref, edition, customer_email,
                customer_locale, seats, issued_at, expires_at, license_key, package_sha256,
                package_size)
            SELECT $1::uuid, id, $3::text, $4::text, $5::text, $6::text, $7::integer,
                $8::timestamptz, $9::timestamptz, $10::text, $11::text, $12::bigint
            FROM as_read
            ON CONFLICT (payment_id) DO NOTHING
            RETURNING {_LICENSE_COLUMNS}
        ), purchase_email AS (
            INSERT INTO license_emails (license_id, reason, attempts, sending_until)
            SELECT id, 'purchase', 1, now() + make_interval(secs => $16) FROM issued
            RETURNING id
        ), link AS (
            INSERT INTO download_links (license_id, email_id, token_sha256, expires_at,
                max_downloads)
            SELECT issued.id, purchase_email.id, $13, now() + make_interval(secs => $14), $15
            FROM issued, purchase_email
            RETURNING id, expires_at, max_downloads
        )
        SELECT issued.*, purchase_email.id AS email_id, link.id AS link_id,
            link.expires_at AS link_expires_at, link.max_downloads AS link_max_downloads
        FROM issued, purchase_email, link
        """,
        uuid.UUID(license.license_id),
        payment.id,
        license.product,
        license.edition,
        license.customer_email,
        locale,
        license.seats,
        license.issued_at,
        license.expires_at,
        key,
        sha256,
        size,
        link.token_sha256,
        link.ttl_s,
        link.max_downloads,
        lease_s,
        payment.status,
        payment.updated_at,
    )
    if row is None:
        return None
    return Issued(
        license=_license(row),
        email_id=int(row["email_id"]),
        link=NewLink(
            id=row["link_id"],
            expires_at=row["link_expires_at"],
            max_downloads=row["link_max_downloads"],
        ),
    )


async def add_email(conn: asyncpg.Connection, license_id: uuid.UUID, reason: str) -> int:
    """A new email owed to the customer. The purchase email exists at most once per license:
    asking for it again returns the existing row's id."""
    email_id = await conn.fetchval(
        """
        INSERT INTO license_emails (license_id, reason) VALUES ($1, $2)
        ON CONFLICT (license_id) WHERE reason = 'purchase' DO NOTHING
        RETURNING id
        """,
        license_id,
        reason,
    )
    if email_id is None:
        email_id = await conn.fetchval(
            "SELECT id FROM license_emails WHERE license_id = $1 AND reason = 'purchase'",
            license_id,
        )
    return int(email_id)


async def set_package(
    conn: asyncpg.Connection, license_id: uuid.UUID, *, sha256: str, size: int
) -> None:
    await conn.execute(
        "UPDATE licenses SET package_sha256 = $2, package_size = $3 WHERE id = $1",
        license_id,
        sha256,
        size,
    )


async def claim_email(
    conn: asyncpg.Connection, email_id: int, *, lease_s: float
) -> PendingEmail | None:
    """The email and its license, the license row locked against revocation meanwhile, and the
    email's sending lease taken for `lease_s` when it is owed (not sent, not superseded, its
    license live) and nobody else holds it. None when the email does not exist.

    The lease is a row lock that outlives the transaction: the claim is an UPDATE, so a
    concurrent claim waits for this transaction and then re-reads the row, finds the lease and
    takes nothing. `mark_email_sent` and `note_email_failure` release it; a worker that died
    mid-send leaves it to expire.

    FOR NO KEY UPDATE rather than FOR UPDATE: new download_links rows referencing the license
    must still be insertable by this same transaction's foreign-key checks.
    """
    row = await conn.fetchrow(
        f"""
        WITH claimed AS (
            UPDATE license_emails SET sending_until = now() + make_interval(secs => $2)
            WHERE id = $1 AND sent_at IS NULL AND superseded_at IS NULL
              AND (sending_until IS NULL OR sending_until <= now())
              AND EXISTS (SELECT 1 FROM licenses WHERE id = license_emails.license_id
                          AND revoked_at IS NULL AND suspended_at IS NULL)
            RETURNING id
        )
        SELECT e.sent_at IS NOT NULL AS sent, e.superseded_at IS NOT NULL AS superseded,
               EXISTS (SELECT 1 FROM claimed) AS claimed,
               -- The snapshot may predate the other worker's claim: then it just began.
               coalesce(extract(epoch FROM e.sending_until - now()), $2)::float8
                   AS lease_left_s,
               p.amount_minor, p.currency, {_QUALIFIED_LICENSE_COLUMNS}
        FROM license_emails e JOIN licenses l ON l.id = e.license_id
            JOIN payments p ON p.id = l.payment_id
        WHERE e.id = $1
        FOR NO KEY UPDATE OF l
        """,
        email_id,
        lease_s,
    )
    if row is None:
        return None
    return PendingEmail(
        id=email_id,
        license=_license(row),
        sent=row["sent"],
        superseded=row["superseded"],
        claimed=row["claimed"],
        lease_left_s=max(row["lease_left_s"], 0.0),
        amount_minor=row["amount_minor"],
        currency=row["currency"],
    )


async def invalidate_links(conn: asyncpg.Connection, license_id: uuid.UUID) -> int:
    """Make every link of the license that still works stop working; returns how many."""
    result = await conn.execute(
        "UPDATE download_links SET invalidated_at = now() "
        "WHERE license_id = $1 AND invalidated_at IS NULL "
        "AND used < max_downloads AND expires_at > now()",
        license_id,
    )
    return int(result.split()[-1])


async def replace_link(
    conn: asyncpg.Connection,
    *,
    license_id: uuid.UUID,
    email_id: int,
    token_sha256: bytes,
    ttl_s: float,
    max_downloads: int,
) -> NewLink:
    """Kill every working link of the license, count the email's attempt and store the new
    link, in one statement (one round trip). The new row is not in the snapshot the UPDATE
    reads, so it is the one link left working."""
    row = await conn.fetchrow(
        """
        WITH invalidated AS (
            UPDATE download_links SET invalidated_at = now()
            WHERE license_id = $1 AND invalidated_at IS NULL
              AND used < max_downloads AND expires_at > now()
        ), attempted AS (
            UPDATE license_emails SET attempts = attempts + 1 WHERE id = $2
        )
        INSERT INTO download_links (license_id, email_id, token_sha256, expires_at, max_downloads)
        VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5)
        RETURNING id, expires_at, max_downloads
        """,
        license_id,
        email_id,
        token_sha256,
        ttl_s,
        max_downloads,
    )
    return NewLink(id=row["id"], expires_at=row["expires_at"], max_downloads=row["max_downloads"])


async def note_email_failure(conn: asyncpg.Connection, email_id: int, error: str) -> None:
    """Keep why the attempt failed and release its lease, so the retry may claim it at once."""
    await conn.execute(
        "UPDATE license_emails SET last_error = $2, sending_until = NULL WHERE id = $1",
        email_id,
        error[:500],
    )


async def mark_email_sent(
    conn: asyncpg.Connection, email_id: int, *, link_id: int, smtp_message_id: str
) -> None:
    """The email went out with that link: one statement, so atomic without a transaction."""
    await conn.execute(
        """
        WITH sent AS (
            UPDATE license_emails SET sent_at = now(), smtp_message_id = $2, last_error = NULL,
                sending_until = NULL
            WHERE id = $1
        )
        UPDATE download_links SET emailed_at = now() WHERE id = $3
        """,
        email_id,
        smtp_message_id,
        link_id,
    )


async def supersede_unsent(conn: asyncpg.Connection, license_id: uuid.UUID) -> int:
    """Unsent emails of the license will never go out (a newer email or a revocation replaces
    them)."""
    result = await conn.execute(
        "UPDATE license_emails SET superseded_at = now() "
        "WHERE license_id = $1 AND sent_at IS NULL AND superseded_at IS NULL",
        license_id,
    )
    return int(result.split()[-1])


async def revoke(conn: asyncpg.Connection, license_id: uuid.UUID, reason: str) -> bool:
    """Revoke once; False when it already was. Its links and unsent emails die with it."""
    revoked = await conn.fetchval(
        "UPDATE licenses SET revoked_at = now(), revoked_reason = $2 "
        "WHERE id = $1 AND revoked_at IS NULL RETURNING true",
        license_id,
        reason,
    )
    if not revoked:
        return False
    await invalidate_links(conn, license_id)
    await supersede_unsent(conn, license_id)
    return True


async def suspend(conn: asyncpg.Connection, payment_id: int, reason: str) -> bool:
    """Suspend the payment's license while its payment is disputed; False when there is none
    or it already is (or is revoked). Its links stop working without being replaced, so a won
    dispute gives the customer back the link they hold."""
    suspended = await conn.fetchval(
        "UPDATE licenses SET suspended_at = now(), suspended_reason = $2 "
        "WHERE payment_id = $1 AND suspended_at IS NULL AND revoked_at IS NULL RETURNING true",
        payment_id,
        reason,
    )
    return bool(suspended)


async def restore(conn: asyncpg.Connection, payment_id: int) -> bool:
    """Lift the suspension of the payment's license; False when it was not suspended."""
    restored = await conn.fetchval(
        "UPDATE licenses SET suspended_at = NULL, suspended_reason = NULL "
        "WHERE payment_id = $1 AND suspended_at IS NOT NULL RETURNING true",
        payment_id,
    )
    return bool(restored)


_LINK_STATE = """
    CASE WHEN l.revoked_at IS NOT NULL THEN 'revoked'
         WHEN l.suspended_at IS NOT NULL THEN 'suspended'
         WHEN d.invalidated_at IS NOT NULL THEN 'replaced'
         WHEN d.used >= d.max_downloads THEN 'used'
         WHEN d.expires_at <= now() THEN 'expired'
         ELSE 'usable' END
"""


async def view_link(conn: asyncpg.Connection, token_sha256: bytes) -> LinkView | None:
    row = await conn.fetchrow(
        f"""
        SELECT d.id, d.license_id, l.product_ref, l.edition, d.expires_at, {_LINK_STATE} AS state,
               l.license_key, l.package_sha256
        FROM download_links d JOIN licenses l ON l.id = d.license_id
        WHERE d.token_sha256 = $1
        """,
        token_sha256,
    )
    return LinkView(**dict(row)) if row else None


async def consume_link(conn: asyncpg.Connection, token_sha256: bytes) -> int | None:
    """Count one download if the link still works, atomically: of two simultaneous requests on
    a one-download link, exactly one gets the link's id back."""
    link_id = await conn.fetchval(
        """
        UPDATE download_links d SET used = d.used + 1, last_used_at = now()
        FROM licenses l
        WHERE d.token_sha256 = $1 AND l.id = d.license_id
          AND d.used < d.max_downloads AND d.expires_at > now() AND d.invalidated_at IS NULL
          AND l.revoked_at IS NULL AND l.suspended_at IS NULL
        RETURNING d.id
        """,
        token_sha256,
    )
    return int(link_id) if link_id is not None else None


async def log_download(
    conn: asyncpg.Connection,
    *,
    link_id: int | None,
    license_id: uuid.UUID | None,
    outcome: str,
    client_ip: str | None,
    user_agent: str | None,
) -> None:
    await conn.execute(
        "INSERT INTO download_log (link_id, license_id, outcome, client_ip, user_agent) "
        "VALUES ($1, $2, $3, $4, $5)",
        link_id,
        license_id,
        outcome,
        client_ip,
        (user_agent or "")[:300] or None,
    )


async def delete_dead_links(conn: asyncpg.Connection, *, retention_s: float) -> int:
    """Links that stopped working (expired, used up or replaced) more than ``retention_s`` ago."""
    result = await conn.execute(
        """
        DELETE FROM download_links
        WHERE greatest(
            CASE WHEN expires_at <= now() THEN expires_at END,
            CASE WHEN used >= max_downloads THEN last_used_at END,
            invalidated_at
        ) < now() - make_interval(secs => $1)
        """,
        retention_s,
    )
    return int(result.split()[-1])


# Each link `d` of license `l`, with its state as `view_link` reads it.
_LINK_COLUMNS = (
    "d.id, d.email_id, d.created_at, d.expires_at, d.used, d.max_downloads, d.emailed_at, "
    f"{_LINK_STATE} AS state"
)
_LINK_FIELDS = tuple(LinkRecord.__dataclass_fields__)


def _prefixed(alias: str, fields: tuple[str, ...]) -> str:
    return ", ".join(f"{alias}.{name} AS {alias}_{name}" for name in fields)


def _part(row: asyncpg.Record, alias: str, fields: tuple[str, ...]) -> dict[str, Any] | None:
    if row[f"{alias}_id"] is None:
        return None
    return {name: row[f"{alias}_{name}"] for name in fields}


async def overview(
    conn: asyncpg.Connection,
    *,
    license_id: uuid.UUID | None = None,
    payment: str | None = None,
    email: str | None = None,
    limit: int = 50,
) -> list[LicenseOverview]:
    """Licenses matching every filter given (none: the newest), newest first, each with its
    payment, newest email and newest link. ``payment`` is colmena's payment id or the
    provider's (Mercado Pago's are digits too, so both are compared)."""
    rows = await conn.fetch(
        f"""
        SELECT {_QUALIFIED_LICENSE_COLUMNS},
               p.provider, p.provider_payment_id, p.amount_minor, p.currency,
               {_prefixed("e", _EMAIL_FIELDS)}, {_prefixed("k", _LINK_FIELDS)}
        FROM licenses l JOIN payments p ON p.id = l.payment_id
        LEFT JOIN LATERAL (
            SELECT {_EMAIL_COLUMNS} FROM license_emails
            WHERE license_id = l.id ORDER BY id DESC LIMIT 1
        ) e ON true
        LEFT JOIN LATERAL (
            SELECT {_LINK_COLUMNS} FROM download_links d
            WHERE d.license_id = l.id ORDER BY d.id DESC LIMIT 1
        ) k ON true
        WHERE ($1::uuid IS NULL OR l.id = $1)
          AND ($2::text IS NULL OR p.provider_payment_id = $2 OR p.id::text = $2)
          AND ($3::text IS NULL OR lower(l.customer_email) = lower($3))
        ORDER BY l.created_at DESC, l.id
        LIMIT $4
        """,
        license_id,
        payment,
        email,
        limit,
    )
    found = []
    for row in rows:
        email_part = _part(row, "e", _EMAIL_FIELDS)
        link_part = _part(row, "k", _LINK_FIELDS)
        found.append(
            LicenseOverview(
                license=_license(row),
                provider=row["provider"],
                provider_payment_id=row["provider_payment_id"],
                amount_minor=row["amount_minor"],
                currency=row["currency"],
                email=EmailRecord(**email_part) if email_part else None,
                link=LinkRecord(**link_part) if link_part else None,
            )
        )
    return found


async def emails_of(conn: asyncpg.Connection, license_id: uuid.UUID) -> list[EmailRecord]:
    rows = await conn.fetch(
        f"SELECT {_EMAIL_COLUMNS} FROM license_emails WHERE license_id = $1 ORDER BY id",
        license_id,
    )
    return [EmailRecord(**dict(row)) for row in rows]


async def links_of(conn: asyncpg.Connection, license_id: uuid.UUID) -> list[LinkRecord]:
    rows = await conn.fetch(
        f"""
        SELECT {_LINK_COLUMNS} FROM download_links d JOIN licenses l ON l.id = d.license_id
        WHERE d.license_id = $1 ORDER BY d.id
        """,
        license_id,
    )
    return [LinkRecord(**dict(row)) for row in rows]
