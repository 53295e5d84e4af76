"""License delivery: issue a signed license for an approved payment, email a link to its package.

Exactly-once effects under at-least-once messages:

- One license per payment: issued under the payment's row lock, backed by UNIQUE (payment_id).
- One email per email row (`license_emails`: the purchase email, and one per resend): a
  session advisory lock on the row serialises concurrent deliveries across the SMTP call, and
  `sent_at` is set only after the server accepted the message, so a duplicate finds it sent.
- At most one working link per license, and no plaintext token at rest: each attempt draws a
  fresh token and, in one transaction, stores only its SHA-256 and invalidates every earlier
  link. A failed attempt thus leaves a link nobody holds, which the retry's transaction kills.
  If the server accepted the message but we never heard (crash, timeout after DATA), the
  customer may get a second email; the first one's link then answers 410 "replaced".

No package is written: each email records the SHA-256 and size of the package its link leads to
(the product archive, cached on this host, plus the license's members), and the ingress that
serves the link assembles the same bytes on its own host and checks them against that record.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from apscheduler.triggers.interval import IntervalTrigger

from colmena.config import Settings
from colmena.config.metrics import (
    LICENSE_CLEANUP_REMOVED,
    LICENSE_EMAILS,
    LICENSES_ISSUED,
    LICENSES_REVOKED,
)
from colmena.domain.downloads import new_token, product_name, token_digest
from colmena.domain.licensing import License, LicenseKeyError, sign_license, verify_license_key
from colmena.domain.money import format_minor
from colmena.domain.packaging import PackagingError
from colmena.errors import PermanentError
from colmena.gateways.license_keys import signing_key
from colmena.gateways.mail import MailDeliveryError, license_delivery_email
from colmena.gateways.mailer import MAILER, Mailer
from colmena.gateways.packaging import PACKAGER, Packager
from colmena.runtime.registry import actor
from colmena.runtime.resources import Resources
from colmena.runtime.scheduler import scheduled
from colmena.store import licenses as store
from colmena.store import payments
from colmena.store.locks import advisory_lock, lock_space

log = structlog.get_logger(__name__)

QUEUE = "licenses"
REVERSED_STATUSES = frozenset({"refunded", "charged_back"})
DISPUTED_STATUS = "in_mediation"
DEFAULT_EDITION = "standard"
# product_ref names a directory and a file: keep it to one safe path segment.
_PRODUCT_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Serialises the sends of one email row (the key is the email id) across processes.
EMAIL_LOCK = lock_space("LICM")


def license_for(payment: payments.Payment, *, now: datetime) -> License:
    """The license a payment buys; PermanentError when the payment cannot describe one."""
    metadata: dict[str, Any] = payment.metadata or {}
    product_ref = payment.product_ref or metadata.get("product")
    if not isinstance(product_ref, str) or not _PRODUCT_REF.fullmatch(product_ref):
        raise PermanentError(f"payment {payment.id} has no usable product_ref")
    email = payment.customer_email or metadata.get("email")
    try:
        seats = int(str(metadata.get("seats") or 1))
        return License(
            license_id=str(uuid.uuid4()),
            product=product_ref,
            edition=str(metadata.get("edition") or DEFAULT_EDITION),
            customer_email=str(email or ""),
            seats=seats,
            issued_at=now,
        )
    except ValueError as exc:
        raise PermanentError(f"payment {payment.id} cannot make a license: {exc}") from None


async def issue_license(
    conn: asyncpg.Connection, settings: Settings, payment_id: int
) -> tuple[store.LicenseRecord, int, bool] | None:
    """(license, purchase email id, newly issued) for the payment, or None when the payment was
    reversed before its license existed. Run inside a transaction: the payment row is locked."""
    payment = await payments.get(conn, payment_id, for_update=True)
    if payment is None:
        raise PermanentError(f"payment {payment_id} does not exist")
    existing = await store.get_by_payment(conn, payment_id)
    if existing is not None:
        return existing, await store.add_email(conn, existing.id, "purchase"), False
    if payment.product_kind != "license":
        raise PermanentError(
            f"payment {payment_id} is not for a license (product_kind={payment.product_kind!r})"
        )
    if payment.approved_at is None:
        raise PermanentError(f"payment {payment_id} was never approved")
    if payment.status in REVERSED_STATUSES:
        log.info(
            "payment reversed before its license was issued; issuing none", payment_id=payment_id
        )
        return None
    if payment.status == DISPUTED_STATUS:
        # A won dispute queues deliver_license again (actors.payments), a lost one revokes.
        log.info("payment disputed before its license was issued; waiting", payment_id=payment_id)
        return None
    license = license_for(payment, now=datetime.now(UTC))
    key = sign_license(license, signing_key(settings))
    locale = payment.customer_locale or (payment.metadata or {}).get("locale")
    record, email_id = await store.insert(
        conn, license, payment_id=payment_id, locale=locale, key=key
    )
    return record, email_id, True


@actor(queue=QUEUE, name="deliver_license")
async def deliver_license(resources: Resources, payment_id: int) -> None:
    """Issue (once) and email the license bought by ``payment_id``, with a download link."""
    async with resources.pool.acquire() as conn, conn.transaction():
        issued = await issue_license(conn, resources.settings, payment_id)
    if issued is None:
        return
    record, email_id, new = issued
    if new:
        LICENSES_ISSUED.inc()
        log.info(
            "license issued",
            license_id=str(record.id),
            payment_id=payment_id,
            product=record.product_ref,
        )
    await send_email(resources, email_id)


@actor(queue=QUEUE, name="send_license_email")
async def send_license_email(resources: Resources, email_id: int) -> None:
    """Send one owed email (a `colmena license resend`) with a fresh link."""
    await send_email(resources, email_id)


@actor(queue=QUEUE, name="revoke_license")
async def revoke_license(resources: Resources, payment_id: int) -> None:
    """Revoke the license of a refunded or charged-back payment; its links stop working."""
    async with resources.pool.acquire() as conn, conn.transaction():
        payment = await payments.get(conn, payment_id, for_update=True)
        if payment is None:
            raise PermanentError(f"payment {payment_id} does not exist")
        record = await store.get_by_payment(conn, payment_id)
        if record is None:
            log.info(
                "no license to revoke for payment", payment_id=payment_id, status=payment.status
            )
            return
        revoked = await store.revoke(conn, record.id, f"payment {payment.status}")
    if revoked:
        LICENSES_REVOKED.labels(source="payment").inc()
        log.info(
            "license revoked",
            license_id=str(record.id),
            payment_id=payment_id,
            status=payment.status,
        )


async def send_email(resources: Resources, email_id: int) -> None:
    """Send the email row ``email_id`` with a fresh link, unless it was sent or superseded."""
    mailer = resources.shared(MAILER)
    packager = resources.shared(PACKAGER)
    async with (
        resources.pool.acquire() as conn,
        advisory_lock(conn, EMAIL_LOCK, email_id % 2**31),
    ):
        await _send_locked(conn, resources.settings, mailer, packager, email_id)


async def _send_locked(
    conn: asyncpg.Connection,
    settings: Settings,
    mailer: Mailer,
    packager: Packager,
    email_id: int,
) -> None:
    token = new_token()
    async with conn.transaction():
        pending = await store.lock_email(conn, email_id)
        if pending is None:
            raise PermanentError(f"license email {email_id} does not exist")
        record = pending.license
        skip = (
            "already sent"
            if pending.sent
            else "superseded by a newer email"
            if pending.superseded
            else "license revoked"
            if record.revoked_at is not None
            else "license suspended while its payment is disputed"
            if record.suspended_at is not None
            else None
        )
        if skip:
            log.info(
                "license email not sent", email_id=email_id, license_id=str(record.id), reason=skip
            )
            return
        await record_package(conn, settings, packager, record)
        link = await store.replace_link(
            conn,
            license_id=record.id,
            email_id=email_id,
            token_sha256=token_digest(token),
            ttl_s=settings.license_link_ttl_hours * 3600,
            max_downloads=settings.license_max_downloads,
        )
    email = license_delivery_email(
        locale=record.customer_locale,
        product_name=product_name(record.product_ref, record.edition),
        amount=format_minor(pending.amount_minor, pending.currency),
        download_url=f"{settings.license_links_base}/downloads/{token}",
        link_expires_at=link.expires_at,
        license_expires_at=record.expires_at,
        max_downloads=link.max_downloads,
    )
    try:
        smtp_message_id = await mailer.send_email(record.customer_email, email)
    except MailDeliveryError as exc:
        await store.note_email_failure(conn, email_id, str(exc))
        LICENSE_EMAILS.labels(
            outcome="temporary_failure" if exc.retryable else "permanent_failure"
        ).inc()
        if not exc.retryable:
            log.error(
                "license email refused; recover with `colmena license resend`",
                email_id=email_id,
                license_id=str(record.id),
                error=str(exc),
            )
        raise
    await store.mark_email_sent(conn, email_id, link_id=link.id, smtp_message_id=smtp_message_id)
    LICENSE_EMAILS.labels(outcome="sent").inc()
    log.info(
        "license email sent",
        email_id=email_id,
        license_id=str(record.id),
        smtp_message_id=smtp_message_id,
    )


async def record_package(
    conn: asyncpg.Connection, settings: Settings, packager: Packager, record: store.LicenseRecord
) -> None:
    """Record the SHA-256 and size of the package the new link will download, as assembled
    from this host's product directory now (a product updated since the last email gives a
    new digest; the older links die in this same transaction). The caller holds the license
    row lock."""
    try:
        license = verify_license_key(record.license_key, signing_key(settings).public_key())
    except LicenseKeyError as exc:
        raise PermanentError(f"license {record.id} cannot be packaged: {exc}") from None
    try:
        sha256, size = await asyncio.to_thread(
            packager.digest, record.product_ref, license, record.license_key
        )
    except PackagingError as exc:
        raise PermanentError(f"license {record.id} cannot be packaged: {exc}") from None
    if (sha256, size) != (record.package_sha256, record.package_size):
        await store.set_package(conn, record.id, sha256=sha256, size=size)


@scheduled("license-cleanup", IntervalTrigger(hours=1))
async def cleanup_licenses(resources: Resources) -> int:
    """Delete links dead for longer than the retention; returns how many."""
    retention_s = resources.settings.license_retention_hours * 3600
    async with resources.pool.acquire() as conn:
        links = await store.delete_dead_links(conn, retention_s=retention_s)
    LICENSE_CLEANUP_REMOVED.labels(kind="link").inc(links)
    log.info("license cleanup done", links_removed=links)
    return links
