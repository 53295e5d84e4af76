"""Shared set-up for the license tests: settings with a key, a product, a local SMTP server;
payments rows inserted directly; links and keys read back from what the customer receives."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import dramatiq
from click.testing import CliRunner, Result
from pydantic import SecretStr

from colmena.cli import cli
from colmena.config import Settings
from colmena.domain.licensing import (
    License,
    generate_key_pair,
    load_private_key,
    sign_license,
)
from colmena.runtime.loop_worker import LoopWorker
from colmena.runtime.publisher import AmqpPublisher
from colmena.runtime.resources import Resources
from tests.conftest import queue_counts, wait_for
from tests.standins.smtp import ReceivedMail, SmtpStandin

PRODUCT = "colmena-bot"
SIGNING_KEY = generate_key_pair()
LINK = re.compile(r"/downloads/([A-Za-z0-9_-]{43})\b")


def license_settings(
    settings: Settings, smtp: SmtpStandin, tmp_path: Path, **overrides: object
) -> Settings:
    products = tmp_path / "products"
    product = products / PRODUCT
    (product / "bin").mkdir(parents=True, exist_ok=True)
    (product / "README.txt").write_text("Colmena bot\n")
    (product / "bin" / "colmena-bot").write_bytes(b"#!/bin/sh\necho bot\n")
    return settings.model_copy(
        update={
            "license_signing_key": SecretStr(SIGNING_KEY.private_pem),
            "license_products_dir": products,
            "license_base_url": "https://shop.example.com",
            "smtp_host": smtp.host,
            "smtp_port": smtp.port,
            "smtp_starttls": False,
            "smtp_timeout_s": 3.0,
            **overrides,
        }
    )


async def insert_payment(
    db: asyncpg.Connection,
    *,
    status: str = "approved",
    email: str = "ana@example.com",
    locale: str | None = "es-VE",
    product_kind: str = "license",
    metadata: dict | None = None,
) -> int:
    return await db.fetchval(
        """
        INSERT INTO payments (provider, provider_payment_id, amount_minor, currency, customer_email,
            customer_locale, product_ref, product_kind, metadata, status, status_at, approved_at)
        VALUES ('stripe', 'pi_' || md5(random()::text), 49900, 'USD', $1, $2, $3, $4, $5, $6,
            now(), now())
        RETURNING id
        """,
        email,
        locale,
        PRODUCT,
        product_kind,
        metadata if metadata is not None else {"edition": "enterprise", "seats": "3"},
        status,
    )


def token_in(mail: ReceivedMail) -> str:
    text = mail.message.get_body(preferencelist=("plain",)).get_content()
    match = LINK.search(text)
    assert match, text
    return match.group(1)


def zip_members(body: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


async def drain(broker: dramatiq.Broker, worker: LoopWorker, queue: str) -> None:
    """Wait until RabbitMQ handed out every message of ``queue`` and the worker finished them."""
    await wait_for(lambda: asyncio.to_thread(lambda: queue_counts(queue)[:2] == (0, 0)))
    await asyncio.to_thread(worker.join)


async def deliver_inline(settings: Settings, payment_id: int, smtp: SmtpStandin) -> str:
    """Run the delivery in this process (no broker) and return the emailed token."""
    from colmena.actors.licenses import deliver_license
    from colmena.runtime.publisher import AmqpPublisher
    from colmena.runtime.resources import Resources

    before = len(smtp.messages)
    resources = Resources(
        settings,
        database_url=settings.require_database_url(),
        publisher=AmqpPublisher(settings.require_broker_url(), settings.queue_prefix),
    )
    await resources.start()
    try:
        await deliver_license(resources, payment_id)
    finally:
        await resources.close()
    return token_in((await smtp.wait_for_async(before + 1))[before])


def _env(settings: Settings) -> dict[str, str]:
    return {
        "COLMENA_DATABASE_URL": settings.require_database_url(),
        "COLMENA_BROKER_URL": settings.require_broker_url(),
        "COLMENA_QUEUE_PREFIX": settings.queue_prefix,
        "COLMENA_DATA_DIR": str(settings.data_dir),
        "COLMENA_LICENSE_SIGNING_KEY": settings.license_signing_key.get_secret_value()
        if settings.license_signing_key
        else "",
    }


async def run_cli(settings: Settings, args: list[str]) -> Result:
    """The CLI runs its own event loop, so it goes to a thread."""
    return await asyncio.to_thread(
        CliRunner().invoke, cli, args, env=_env(settings), catch_exceptions=False
    )


def a_key(private_pem: str = SIGNING_KEY.private_pem) -> str:
    license = License(
        license_id=str(uuid.uuid4()), product="colmena-bot", edition="enterprise",
        customer_email="ana@example.com", seats=3, issued_at=datetime(2025, 1, 2, tzinfo=UTC),
    )  # fmt: skip
    return sign_license(license, load_private_key(private_pem))


def tampered(key: str) -> str:
    payload, signature = key.split(".")
    document = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    document["seats"] = 300
    raw = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + signature


def resources_for(settings: Settings) -> Resources:
    """Resources for calling the licenses actors directly: they publish nothing, so the
    publisher points nowhere."""
    return Resources(
        settings,
        database_url=settings.require_database_url(),
        publisher=AmqpPublisher("amqp://x@127.0.0.1:1/", ""),
    )
