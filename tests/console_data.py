"""A small, realistic console dataset: what an operator and two tenants would see on a normal day.

Payments in every state with their provider events, licenses (one revoked) with their emails,
invoices (stamped and failed), a dead letter in RabbitMQ (plus two undecodable ones), rates
with a suspect value waiting for an operator, and two tenants with bots, provider keys and a
Telegram notification endpoint with one delivery. Every console page then has something to
render; the browser tests fill route parameters from it.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import asyncpg
import dramatiq

from colmena.config import Settings
from colmena.domain.tenants import DEFAULT_CONFIG
from colmena.store import bot_logs, notifications, provider_keys, rates
from tests.bots_support import add_tenant
from tests.test_dead_letters import fill_dead_letters


@dataclass
class SeededTenant:
    id: str
    token: str
    email: str
    key_last4: str


@dataclass
class ConsoleData:
    payment_ids: list[int]
    provider_payment_ids: list[str]
    emails: list[str]
    license_ids: list[str]
    invoice_ids: list[int]
    dead_letter: dramatiq.Message
    dead_letter_queue: str
    suspect_rate_id: int
    rate_ids: list[int]
    tenants: list[SeededTenant] = field(default_factory=list)


async def _payment(
    conn: asyncpg.Connection, n: int, *, status: str, provider: str, at: datetime
) -> tuple[int, str, str]:
    provider_id = (
        f"pi_seed{n:04d}{uuid.uuid4().hex[:6]}" if provider == "stripe" else str(880000000 + n)
    )
    email = f"cliente{n}@example.com"
    payment_id = await conn.fetchval(
        """
        INSERT INTO payments (provider, provider_payment_id, amount_minor, currency,
            customer_email, customer_locale, product_ref, product_kind, status, status_at,
            approved_at, created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, 'es', 'pro-app', 'license', $6::text, $7,
            CASE WHEN $6::text = 'approved' THEN $7::timestamptz END, $7, $7)
        RETURNING id
        """,
        provider,
        provider_id,
        (49900, 129900, 49900, 19900, 49900)[(n - 1) % 5],
        "USD" if provider == "stripe" else "MXN",
        email,
        status,
        at,
    )
    events = [("webhook", "pending", at, True, None)]
    if status != "pending":
        events.append(("webhook", status, at + timedelta(seconds=30), True, None))
        events.append(("poll", status, at + timedelta(seconds=90), False, "already " + status))
    for source, event_status, provider_at, applied, reason in events:
        await conn.execute(
            """
            INSERT INTO payment_events (payment_id, source, status, provider_at, applied, reason,
                recorded_at)
            VALUES ($1, $2, $3, $4::timestamptz, $5, $6, $4::timestamptz + interval '1 second')
            """,
            payment_id,
            source,
            event_status,
            provider_at,
            applied,
            reason,
        )
    return payment_id, provider_id, email


async def _license(conn: asyncpg.Connection, payment_id: int, email: str, at: datetime) -> str:
    license_id = uuid.uuid4()
    await conn.execute(
        """
        INSERT INTO licenses (id, payment_id, product_ref, edition, customer_email,
            customer_locale, seats, issued_at, license_key, created_at)
        VALUES ($1, $2, 'pro-app', 'pro', $3, 'es', 1, $4, $5, $4)
        """,
        license_id,
        payment_id,
        email,
        at,
        f"SEED-{license_id.hex[:12]}",
    )
    await conn.execute(
        """
        INSERT INTO license_emails (license_id, reason, requested_at, attempts, sent_at,
            smtp_message_id)
        VALUES ($1, 'purchase', $2::timestamptz, 1, $2::timestamptz + interval '2 seconds', $3)
        """,
        license_id,
        at,
        f"<{license_id}@seed>",
    )
    return str(license_id)


async def _invoice(
    conn: asyncpg.Connection, payment_id: int, email: str, at: datetime, *, stamped: bool
) -> int:
    """The payment's CFDI, in its currency and for its amount."""
    return await conn.fetchval(
        """
        INSERT INTO invoices (payment_id, status, issuer_rfc, series, folio, receiver_email,
            currency, total, uuid, stamped_xml, fecha_timbrado, failure_source, failure_code,
            failure_message, attempts, created_at, updated_at)
        SELECT $1, $2, 'EKU9003173C9', 'A', $1, $3, currency, amount_minor / 100.0, $4, $5, $6,
            $7, $8, $9, 1, $10, $10
        FROM payments WHERE id = $1
        RETURNING id
        """,
        payment_id,
        "stamped" if stamped else "failed",
        email,
        str(uuid.uuid4()).upper() if stamped else None,
        b"<cfdi:Comprobante/>" if stamped else None,
        at if stamped else None,
        None if stamped else "pac",
        None if stamped else "CFDI40145",
        None if stamped else "El RFC del receptor no existe",
        at,
    )


async def seed_console(
    conn: asyncpg.Connection, settings: Settings, *, payments: int = 5
) -> ConsoleData:
    """Fill the test's database (and its RabbitMQ dead letters) with a day's worth of data:
    `payments` payments (at least 5: each state and provider appears), the third one's
    invoice failed, the last license revoked; tenant 0's bot stopped, tenant 1's running."""
    now = datetime.now(UTC)
    payment_ids, provider_ids, emails, license_ids, invoice_ids = [], [], [], [], []
    plan = [
        ("approved", "stripe"),
        ("approved", "mercadopago"),
        ("approved", "stripe"),
        ("pending", "mercadopago"),
        ("refunded", "stripe"),
    ]
    for n in range(1, max(payments, len(plan)) + 1):
        status, provider = plan[(n - 1) % len(plan)]
        at = now - timedelta(minutes=47 * (payments + 1 - n))
        payment_id, provider_id, email = await _payment(
            conn, n, status=status, provider=provider, at=at
        )
        payment_ids.append(payment_id)
        provider_ids.append(provider_id)
        emails.append(email)
        if status == "approved":
            license_ids.append(await _license(conn, payment_id, email, at))
            invoice_ids.append(await _invoice(conn, payment_id, email, at, stamped=n != 3))
    await conn.execute(
        "UPDATE licenses SET revoked_at = now(), revoked_reason = 'chargeback' WHERE id = $1",
        uuid.UUID(license_ids[-1]),
    )

    rate_ids = []
    for days in range(30, 0, -1):  # a month of a slowly climbing bolívar price
        for source, pair, start in (
            ("bcv", "USD/VES", Decimal("36.50")),
            ("binance", "USDT/VES", Decimal("38.90")),
        ):
            drift = Decimal(30 - days) * Decimal("0.12") + Decimal(days % 3) / 20
            row = await rates.insert(
                conn,
                source=source,
                pair=pair,
                value=start + drift,
                effective_date=date.today() - timedelta(days=days),
                status="accepted",
                reason="within bounds",
            )
            rate_ids.append(row.id)
    suspect = await rates.insert(
        conn,
        source="bcv",
        pair="USD/VES",
        value=Decimal("52.10"),
        effective_date=date.today(),
        status="suspect",
        reason="jumped 30% since the last accepted value",
    )

    message = await asyncio.to_thread(fill_dead_letters, settings)
    await conn.execute(
        "INSERT INTO dead_letter_reasons (message_id, actor, error) VALUES ($1, $2, $3)",
        message.message_id,
        message.actor_name,
        "ValueError: the engine was down",
    )

    data = ConsoleData(
        payment_ids=payment_ids,
        provider_payment_ids=provider_ids,
        emails=emails,
        license_ids=license_ids,
        invoice_ids=invoice_ids,
        dead_letter=message,
        dead_letter_queue="bots",
        suspect_rate_id=suspect.id,
        rate_ids=rate_ids,
    )
    for n, (plan_name, last4) in enumerate((("free", "4242"), ("pro", "9876"))):
        config = dict(DEFAULT_CONFIG)
        tenant_id, token = await add_tenant(conn, plan=plan_name, config=config)
        await provider_keys.put_key(
            conn,
            tenant_id,
            "stripe",
            ciphertext=f"not-a-real-ciphertext-{n}",
            last4=last4,
            key_version="seed",
        )
        lines = [f"bot {tenant_id} ready"]
        if n == 1:
            lines += [f"BTCUSDT paper order {i}: bought 0.001 at 9650{i}.10" for i in range(1, 6)]
            await conn.execute(
                """
                UPDATE bots SET desired = 'running', observed = 'running', observed_at = now(),
                    healthy = true
                WHERE tenant_id = $1
                """,
                tenant_id,
            )
        await notifications.put_endpoint(conn, tenant_id, "telegram", f"10000{n}")
        await notifications.record_events(conn, tenant_id, [("bot.started", {"by": "tenant"})])
        await bot_logs.append(
            conn,
            tenant_id,
            1,
            [(now - timedelta(minutes=len(lines) - i), line) for i, line in enumerate(lines)],
        )
        data.tenants.append(
            SeededTenant(
                id=tenant_id, token=token, email=f"{tenant_id}@example.com", key_last4=last4
            )
        )
    return data
