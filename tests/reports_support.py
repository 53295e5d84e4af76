"""Seeding payments with their licenses, invoices, cancellations, credit notes and orders through
the store functions the actors use, for the reports and reconciliation tests; and running the
CLI in a process of its own (real exit codes, real stdout bytes)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from colmena.config import Settings
from colmena.domain.cancellation import CancellationRequest, Motive
from colmena.domain.licensing import License
from colmena.store import cancellations, credit_notes, invoices, licenses, orders, payments
from tests.ops_support import colmena_env

PRODUCT = "colmena-enterprise"
ISSUER = "EKU9003173C9"
FISCAL = {"rfc": "XAXX010101000", "fiscal_name": "PUBLICO EN GENERAL", "cfdi_use": "S01"}
# Well past the reconciliation's grace period: its follow-ups had every chance to run.
SETTLED = timedelta(hours=2)


async def add_payment(
    db: asyncpg.Connection,
    *,
    created_at: datetime,
    statuses: tuple[str, ...] = ("approved",),
    provider: str = "stripe",
    provider_payment_id: str | None = None,
    amount_minor: int = 150_000,
    currency: str = "MXN",
    product_kind: str | None = "license",
    fiscal: bool = False,
    email: str = "cliente@example.com",
    metadata: dict[str, str] | None = None,
    status_age: timedelta = SETTLED,
) -> payments.Payment:
    """A payment as the payments actor leaves it: created, then moved through `statuses`; its
    timestamps placed at `created_at` (and its last status `status_age` before now)."""
    ppid = provider_payment_id or f"{'pi' if provider == 'stripe' else 'mp'}_{uuid.uuid4().hex}"
    status_at = datetime.now(UTC) - status_age
    async with db.transaction():
        payment, _ = await payments.lock_or_create(
            db,
            {
                "provider": provider,
                "provider_payment_id": ppid,
                "amount_minor": amount_minor,
                "currency": currency,
                "customer_email": email,
                "product_ref": PRODUCT if product_kind == "license" else None,
                "product_kind": product_kind,
                "metadata": (metadata or {}) | (FISCAL if fiscal else {}),
                "provider_at": created_at,
            },
        )
        for offset, status in enumerate(statuses):
            moved = await payments.set_status(
                db, payment.id, status, status_at - timedelta(seconds=len(statuses) - offset)
            )
            assert moved is not None
        await db.execute(
            "UPDATE payments SET created_at = $2 WHERE id = $1", payment.id, created_at
        )
    found = await payments.get(db, payment.id)
    assert found is not None
    return found


async def add_license(db: asyncpg.Connection, payment: payments.Payment) -> uuid.UUID:
    license = License(
        license_id=str(uuid.uuid4()),
        product=PRODUCT,
        edition="enterprise",
        customer_email=payment.customer_email or "cliente@example.com",
        seats=5,
        issued_at=payment.created_at.replace(microsecond=0),
    )
    async with db.transaction():
        issued = await licenses.issue(
            db,
            license,
            payment=payment,
            locale="es-MX",
            key="CLM1." + uuid.uuid4().hex,
            package=("0" * 64, 1),
            link=licenses.LinkDraft(token_sha256=os.urandom(32), ttl_s=3600, max_downloads=1),
            lease_s=0,
        )
    return uuid.UUID(str(issued.license.id))


async def revoke_license(db: asyncpg.Connection, license_id: uuid.UUID) -> None:
    assert await licenses.revoke(db, license_id, "refunded")


async def add_invoice(
    db: asyncpg.Connection,
    payment: payments.Payment,
    *,
    total: Decimal | None = None,
    stamped: bool = True,
) -> int:
    """The payment's CFDI de Ingreso, signed for `total` (default: what was paid) and stamped."""
    async with db.transaction():
        invoice = await invoices.create(db, payment_id=payment.id, issuer_rfc=ISSUER, series="A")
        await invoices.save_signed(
            db,
            invoice.id,
            xml=b"<cfdi:Comprobante/>",
            total=total if total is not None else Decimal(payment.amount_minor).scaleb(-2),
            currency=payment.currency,
            receiver_rfc=FISCAL["rfc"],
            receiver_email=payment.customer_email,
        )
        if stamped:
            await invoices.mark_stamped(
                db,
                invoice.id,
                stamped_xml=b"<cfdi:Comprobante Sello='x'/>",
                uuid=str(uuid.uuid4()).upper(),
                fecha_timbrado=payment.created_at + timedelta(minutes=1),
                recovered=False,
                xml_path=None,
            )
    return invoice.id


async def request_cancellation(db: asyncpg.Connection, invoice_id: int) -> None:
    async with db.transaction():
        await invoices.request_cancellation(db, invoice_id)
        await cancellations.request(
            db,
            invoice_id,
            CancellationRequest(Motive("03"), None),
            needs_acceptance=False,
            source="refund",
            now=datetime.now(UTC),
        )


async def add_credit_note(
    db: asyncpg.Connection, payment: payments.Payment, invoice_id: int, refunded_minor: int
) -> int:
    ingreso = await invoices.get(db, invoice_id)
    assert ingreso is not None and ingreso.uuid is not None
    async with db.transaction():
        note = await credit_notes.create(
            db,
            payment_id=payment.id,
            issuer_rfc=ISSUER,
            series="NC",
            related_uuid=ingreso.uuid,
            refunded_through_minor=refunded_minor,
            credit=Decimal(refunded_minor).scaleb(-2),
        )
    return note.id


async def add_order(
    db: asyncpg.Connection, *, amount: str, provider: str = "stripe", currency: str = "MXN"
) -> uuid.UUID:
    """An open order of the license product, as the checkout stores it before the provider."""
    await db.execute(
        "INSERT INTO products (ref, kind, name, package_dir, editions, max_seats) "
        "VALUES ($1, 'license', 'Colmena Enterprise', $1, '{enterprise}', 50) "
        "ON CONFLICT (ref) DO NOTHING",
        PRODUCT,
    )
    price_id = await db.fetchval(
        "SELECT id FROM prices WHERE product_ref = $1 AND currency = $2 AND archived_at IS NULL",
        PRODUCT,
        currency,
    ) or await db.fetchval(
        "INSERT INTO prices (product_ref, edition, currency, amount) "
        "VALUES ($1, 'enterprise', $2, $3) RETURNING id",
        PRODUCT,
        currency,
        Decimal(amount),
    )
    order_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO orders (id, product_ref, price_id, edition, seats, currency, amount, "
        "buyer_email, buyer_locale, provider, status) "
        "VALUES ($1, $2, $3, 'enterprise', 5, $4, $5, 'cliente@example.com', 'es-MX', $6, "
        "'open')",
        order_id,
        PRODUCT,
        price_id,
        currency,
        Decimal(amount),
        provider,
    )
    return order_id


async def settle_order(db: asyncpg.Connection, payment: payments.Payment) -> payments.Payment:
    """What the payments actor does after applying an approval: link the payment to its order
    (paid, or held when the amount differs)."""
    async with db.transaction():
        locked = await payments.get(db, payment.id, for_update=True)
        assert locked is not None
        linked, _ = await orders.settle_payment(db, locked)
    return linked


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8-sig")


async def run_colmena(settings: Settings, *args: str, **env: str) -> Ran:
    """`colmena ARGS` in a process of its own on this test's database."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "colmena", *args],
        env=colmena_env(settings, **env),
        capture_output=True,
        timeout=120,
        check=False,
    )
    return Ran(done.returncode, done.stdout, done.stderr.decode())


def local_day(moment: datetime, zone: Any) -> str:
    return moment.astimezone(zone).date().isoformat()
