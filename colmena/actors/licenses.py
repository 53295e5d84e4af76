"""License delivery: issue a signed license for an approved payment, email a link to its package.

Exactly-once effects under at-least-once messages:

- One license per payment: issued under the payment's row lock, backed by UNIQUE (payment_id).
- One email per email row (`license_emails`: the purchase email, and one per resend): a
  sending lease on the row (`sending_until`) serialises concurrent deliveries across the SMTP
  call, and `sent_at` is set only after the server accepted the message, so a duplicate finds
  it sent.
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
from colmena.errors import PermanentError, TransientError
from colmena.gateways.license_keys import signing_key
from colmena.gateways.mail import MailDeliveryError, license_delivery_email
from colmena.gateways.mailer import MAILER
from colmena.gateways.packaging import PACKAGER, Packager
from colmena.runtime.follow_ups import committed
from colmena.runtime.registry import actor
from colmena.runtime.resources import Resources
from colmena.runtime.scheduler import scheduled
from colmena.store import licenses as store
from colmena.store import payments

log = structlog.get_logger(__name__)

QUEUE = "licenses"
REVERSED_STATUSES = frozenset({"refunded", "charged_back"})
DISPUTED_STATUS = "in_mediation"
DEFAULT_EDITION = "standard"
# product_ref names a directory and a file: keep it to one safe path segment.
_PRODUCT_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


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


class LicenseEmailBusy(TransientError):
    """Another worker holds the email's sending lease: retry once it runs out, when the email
    was sent (and the retry finds it so) or its worker died (and the retry sends it)."""


def _issuable(payment: payments.Payment) -> bool:
    """Whether the payment's license may be issued now."""
    return (
        payment.product_kind == "license"
        and payment.approved_at is not None
        and payment.status not in REVERSED_STATUSES
        and payment.status != DISPUTED_STATUS
    )


def may_issue(payment: payments.Payment) -> bool:
    """Whether the payment's license may be issued now; False (logged) when the payment was
    reversed or is disputed, PermanentError when it cannot have a license at all."""
    if _issuable(payment):
        return True
    if payment.product_kind != "license":
        raise PermanentError(
            f"payment {payment.id} is not for a license (product_kind={payment.product_kind!r})"
        )
    if payment.approved_at is None:
        raise PermanentError(f"payment {payment.id} was never approved")
    if payment.status in REVERSED_STATUSES:
        log.info(
            "payment reversed before its license was issued; issuing none", payment_id=payment.id
        )
    else:
        # A won dispute queues deliver_license again (actors.payments), a lost one revokes.
        log.info("payment disputed before its license was issued; waiting", payment_id=payment.id)
    return False


async def issue_license(
    conn: asyncpg.Connection,
    settings: Settings,
    packager: Packager,
    payment: payments.Payment,
    token: str,
) -> store.Issued | None:
    """Issue the license ``payment`` bought (`may_issue` said so), with its purchase email
    claimed and that email's link (to ``token``) stored; None, with nothing written, when the
    payment changed since ``payment`` was read or a concurrent delivery issued it first."""
    license = license_for(payment, now=datetime.now(UTC))
    key = sign_license(license, signing_key(settings))
    package = await _package_digest(packager, license, key, payment.id)
    locale = payment.customer_locale or (payment.metadata or {}).get("locale")
    return await store.issue(
        conn,
        license,
        payment=payment,
        locale=locale,
        key=key,
        package=package,
        link=_link_draft(settings, token),
        lease_s=settings.license_send_lease_s,
    )


async def _purchase_email(conn: asyncpg.Connection, payment_id: int) -> int:
    """The purchase email of the payment's existing license (created if it was never owed)."""
    existing = await store.get_by_payment(conn, payment_id)
    if existing is None:  # the caller holds the payment's lock: only a manual DELETE gets here
        raise PermanentError(f"payment {payment_id}'s license vanished while locked")
    return await store.add_email(conn, existing.id, "purchase")


@actor(queue=QUEUE, name="deliver_license")
async def deliver_license(resources: Resources, payment_id: int) -> None:
    """Issue (once) and email the license bought by ``payment_id``, with a download link.

    Run in the worker right after the settlement that approved the payment, the delivery
    starts from the payment as that settlement committed it (`committed`) and issues in one
    statement, which writes only if the payment is still so. Otherwise the first delivery is
    two statements in one transaction (lock the payment, store license, email, link and lease).
    Either way the SMTP conversation follows, and one statement marks the email sent. A
    redelivered message finds the license and goes the way of any owed email (`send_email`).
    """
    token = new_token()
    settled = committed(payments.Payment, payment_id)
    if settled is not None and _issuable(settled):
        async with resources.pool.acquire() as conn:
            issued = await issue_license(
                conn, resources.settings, resources.shared(PACKAGER), settled, token
            )
        if issued is not None:
            await _deliver_issued(resources, settled, issued, token)
            return
    issued = None
    async with resources.pool.acquire() as conn, conn.transaction():
        delivery = await store.lock_for_delivery(conn, payment_id)
        if delivery is None:
            raise PermanentError(f"payment {payment_id} does not exist")
        if delivery.license_id is None:
            if not may_issue(delivery.payment):
                return
            issued = await issue_license(
                conn, resources.settings, resources.shared(PACKAGER), delivery.payment, token
            )
        if issued is None:
            email_id = delivery.email_id or await _purchase_email(conn, payment_id)
    if issued is None:
        await send_email(resources, email_id)
        return
    await _deliver_issued(resources, delivery.payment, issued, token)


async def _deliver_issued(
    resources: Resources, payment: payments.Payment, issued: store.Issued, token: str
) -> None:
    """Email a license just issued, its purchase email claimed and its link stored."""
    LICENSES_ISSUED.inc()
    log.info(
        "license issued",
        license_id=str(issued.license.id),
        payment_id=payment.id,
        product=issued.license.product_ref,
    )
    await _send_claimed(
        resources,
        email_id=issued.email_id,
        record=issued.license,
        amount=format_minor(payment.amount_minor, payment.currency),
        token=token,
        link=issued.link,
    )


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


def _link_draft(settings: Settings, token: str) -> store.LinkDraft:
    return store.LinkDraft(
        token_sha256=token_digest(token),
        ttl_s=settings.license_link_ttl_hours * 3600,
        max_downloads=settings.license_max_downloads,
    )


async def send_email(resources: Resources, email_id: int) -> None:
    """Send the email row ``email_id`` with a fresh link, unless it was sent or superseded, or
    its license is revoked or suspended. Another worker sending it is `LicenseEmailBusy`."""
    settings = resources.settings
    token = new_token()
    async with resources.pool.acquire() as conn, conn.transaction():
        pending = await store.claim_email(conn, email_id, lease_s=settings.license_send_lease_s)
        if pending is None:
            raise PermanentError(f"license email {email_id} does not exist")
        record = pending.license
        skip = (
            "license revoked"
            if record.revoked_at is not None
            else "license suspended while its payment is disputed"
            if record.suspended_at is not None
            else "already sent"
            if pending.sent
            else "superseded by a newer email"
            if pending.superseded
            else None
        )
        if skip:
            log.info(
                "license email not sent", email_id=email_id, license_id=str(record.id), reason=skip
            )
            return
        if not pending.claimed:
            raise LicenseEmailBusy(
                f"license email {email_id} is being sent by another worker",
                retry_after_s=pending.lease_left_s + 1,
            )
        await record_package(conn, settings, resources.shared(PACKAGER), record)
        draft = _link_draft(settings, token)
        link = await store.replace_link(
            conn,
            license_id=record.id,
            email_id=email_id,
            token_sha256=draft.token_sha256,
            ttl_s=draft.ttl_s,
            max_downloads=draft.max_downloads,
        )
    await _send_claimed(
        resources,
        email_id=email_id,
        record=record,
        amount=format_minor(pending.amount_minor, pending.currency),
        token=token,
        link=link,
    )


async def _send_claimed(
    resources: Resources,
    *,
    email_id: int,
    record: store.LicenseRecord,
    amount: str,
    token: str,
    link: store.NewLink,
) -> None:
    """Send an email whose lease this worker holds and whose link is stored, then mark it sent
    (or note the failure); either statement releases the lease. No connection is held during
    the SMTP conversation."""
    settings = resources.settings
    email = license_delivery_email(
        locale=record.customer_locale,
        product_name=product_name(record.product_ref, record.edition),
        amount=amount,
        download_url=f"{settings.license_links_base}/downloads/{token}",
        link_expires_at=link.expires_at,
        license_expires_at=record.expires_at,
        max_downloads=link.max_downloads,
    )
    try:
        smtp_message_id = await resources.shared(MAILER).send_email(record.customer_email, email)
    except MailDeliveryError as exc:
        async with resources.pool.acquire() as conn:
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
    async with resources.pool.acquire() as conn:
        await store.mark_email_sent(
            conn, email_id, link_id=link.id, smtp_message_id=smtp_message_id
        )
    LICENSE_EMAILS.labels(outcome="sent").inc()
    log.info(
        "license email sent",
        email_id=email_id,
        license_id=str(record.id),
        smtp_message_id=smtp_message_id,
    )


async def _package_digest(
    packager: Packager, license: License, key: str, payment_id: int
) -> tuple[str, int]:
    """SHA-256 and size of the package a link to this license downloads, as this host's
    product directory assembles it now: on the event loop when that is quick, else in a
    thread (the product archive must be built or read)."""
    try:
        quick = packager.digest_now(license.product, license, key)
        if quick is not None:
            return quick
        return await asyncio.to_thread(packager.digest, license.product, license, key)
    except PackagingError as exc:
        raise PermanentError(f"payment {payment_id}'s license cannot be packaged: {exc}") from None


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
    sha256, size = await _package_digest(packager, license, record.license_key, record.payment_id)
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
