"""`colmena invoices`: list and inspect CFDI invoices, retry one, check the issuer's CSD."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TypeVar

import asyncpg
import click

from colmena.actors.invoice_stamping import QUEUE
from colmena.config import Settings, SettingsError, load_settings
from colmena.config.dev_stack import load_operator_settings
from colmena.domain.money import format_money
from colmena.gateways.cfdi import CsdError, is_sandbox_stamp
from colmena.gateways.csd import load_csd_signer, read_csd_certificate
from colmena.gateways.stamping_config import StampingNotConfigured, csd_source
from colmena.runtime.outbox import publish_now
from colmena.runtime.startup import amqp_publisher, open_database
from colmena.store import invoices, outbox
from colmena.store.invoices import STATUSES, InvoiceRecord
from colmena.store.outbox import OutboxMessage
from colmena.store.pool import create_pool

EXIT_WARNING = 1
T = TypeVar("T")


@click.group("invoices")
def invoices_group() -> None:
    """CFDI invoices: list, show, retry, check-csd."""


@invoices_group.command("list")
@click.option(
    "--status", type=click.Choice(STATUSES), default=None, help="only invoices in this status"
)
@click.option("--limit", type=click.IntRange(min=1, max=10_000), default=50, show_default=True)
def list_command(status: str | None, limit: int) -> None:
    """The most recent invoices, newest first."""

    async def run(conn: asyncpg.Connection) -> list[invoices.InvoiceSummary]:
        return await invoices.recent(conn, limit=limit, status=status)

    rows = _with_connection(load_operator_settings(), run)
    if not rows:
        click.echo("no invoices")
        return
    click.echo(
        f"{'id':>6}  {'payment':>7}  {'status':<22} {'folio':<10} {'receiver':<13} {'total':>16}  "
        f"{'uuid':<36}  {'tries':>5}  {'code':<10} emailed"
    )
    for row in rows:
        click.echo(
            f"{row.id:>6}  {row.payment_id:>7}  {row.status:<22} {row.series + str(row.folio):<10} "
            f"{row.receiver_rfc or '-':<13} {_total(row.total, row.currency):>16}  "
            f"{row.uuid or '-':<36}  {row.attempts:>5}  "
            f"{row.failure_code or '-':<10} {'yes' if row.emailed_at else 'no'}"
        )


@invoices_group.command("show")
@click.argument("invoice_id", type=int)
def show_command(invoice_id: int) -> None:
    """One invoice in full, with the PAC's code and message when it was refused."""

    async def run(conn: asyncpg.Connection) -> InvoiceRecord | None:
        return await invoices.get(conn, invoice_id)

    invoice = _with_connection(load_operator_settings(), run)
    if invoice is None:
        raise click.ClickException(f"no invoice {invoice_id}")
    fields = [
        ("invoice", str(invoice.id)),
        ("payment", str(invoice.payment_id)),
        ("status", invoice.status),
        ("issuer", invoice.issuer_rfc),
        ("folio", invoice.label),
        ("receiver", invoice.receiver_rfc or "-"),
        ("total", _total(invoice.total, invoice.currency)),
        ("sealed at", _when(invoice.signed_at)),
        ("PAC attempts", str(invoice.attempts)),
        ("UUID", invoice.uuid or "-"),
        (
            "stamped at",
            _when(invoice.fecha_timbrado)
            + (" (recovered from the PAC)" if invoice.recovered else ""),
        ),
    ]
    if invoice.stamped_xml is not None and is_sandbox_stamp(invoice.stamped_xml):
        fields.append(
            (
                "sandbox",
                "stamped by colmena dev's PAC sandbox, test CSD minted locally: no fiscal validity",
            )
        )
    fields += [
        ("XML", _kept(invoice.stamped_xml, invoice.xml_path, missing="not stamped")),
        ("PDF", _kept(invoice.pdf, invoice.pdf_path, missing="not rendered yet")),
        (
            "emailed",
            f"{_when(invoice.emailed_at)} to {invoice.receiver_email}"
            if invoice.emailed_at
            else "no",
        ),
    ]
    if invoice.cancel_requested_at is not None:
        fields.append(
            (
                "cancellation requested",
                _when(invoice.cancel_requested_at) + " (cancel it in the PAC)",
            )
        )
    if invoice.failure_code is not None:
        if invoice.failure_source == "pac":
            fields += [
                ("PAC code", invoice.failure_code),
                ("PAC message", invoice.failure_message or ""),
            ]
        else:
            label = "last error (retrying)" if invoice.failure_source == "transient" else "refused"
            fields.append(
                (
                    label,
                    f"{invoice.failure_source}: {invoice.failure_code}: {invoice.failure_message}",
                )
            )
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        click.echo(f"{name:<{width}}  {value}")


@invoices_group.command("retry")
@click.argument("invoice_id", type=int)
def retry_command(invoice_id: int) -> None:
    """Queue the invoice's next step again: stamping (a refused one is rebuilt from the payment
    and sealed anew) or, once stamped, the PDF and email."""
    settings = load_operator_settings()

    async def run(conn: asyncpg.Connection) -> tuple[str, OutboxMessage | None]:
        async with conn.transaction():
            invoice = await invoices.get(conn, invoice_id, for_update=True)
            if invoice is None:
                raise click.ClickException(f"no invoice {invoice_id}")
            if invoice.status == "cancellation_requested":
                raise click.ClickException(
                    f"invoice {invoice_id}: cancellation requested, not retried"
                )
            if invoice.uuid is not None:
                if invoice.emailed_at is not None:
                    raise click.ClickException(
                        f"invoice {invoice_id} is stamped and was emailed: nothing to retry"
                    )
                step, actor, args = "PDF and email", "deliver_invoice", [invoice.id]
            else:
                if invoice.status == "failed":
                    await invoices.reset_refused(conn, invoice.id)
                step, actor, args = "stamping", "stamp_invoice", [invoice.payment_id]
            row = await outbox.record(conn, queue=QUEUE, actor=actor, args=args)
        return step, row

    step, row = _with_connection(settings, run)
    published = asyncio.run(_publish(settings, row)) if settings.broker_url is not None else False
    how = "published" if published else "queued in the outbox (the scheduler's relay publishes it)"
    click.echo(f"invoice {invoice_id}: {step} {how}")


async def _publish(settings: Settings, row: OutboxMessage | None) -> bool:
    publisher = amqp_publisher(settings)
    pool = await create_pool(settings.require_database_url(), min_size=1, max_size=1)
    try:  # a broker that does not confirm leaves the row to the relay
        return await publish_now(pool, publisher, [row]) == 1
    finally:
        await publisher.close()
        await pool.close()


@invoices_group.command("check-csd")
def check_csd_command() -> None:
    """The CSD's RFC, number and validity; exit 1 when it expires within
    COLMENA_CFDI_CSD_WARN_DAYS, has expired, or does not fit the issuer settings."""
    settings = load_settings()
    try:
        source = csd_source(settings)
    except StampingNotConfigured as exc:
        raise SettingsError(str(exc)) from None
    try:
        info = read_csd_certificate(source)
        load_csd_signer(source)
    except CsdError as exc:
        hint = f": {exc.hint}" if exc.hint else ""
        raise click.ClickException(f"{exc}{hint}") from None
    now = dt.datetime.now(dt.UTC)
    days_left = info.days_left(now)
    click.echo(f"RFC                 {info.rfc}")
    click.echo(f"name                {info.legal_name or '-'}")
    click.echo(f"certificate number  {info.certificate_number}")
    click.echo(f"valid from          {info.not_before.isoformat()}")
    click.echo(f"valid until         {info.not_after.isoformat()}")
    click.echo(f"days left           {days_left}")
    problems = []
    if not info.is_valid_at(now):
        problems.append("the CSD is not valid now: renew it in the SAT portal")
    elif days_left < settings.cfdi_csd_warn_days:
        problems.append(f"the CSD expires in {days_left} days: renew it in the SAT portal")
    if settings.cfdi_issuer_rfc and settings.cfdi_issuer_rfc != info.rfc:
        problems.append(
            f"COLMENA_CFDI_ISSUER_RFC is {settings.cfdi_issuer_rfc}, the CSD belongs to {info.rfc}"
        )
    for problem in problems:
        click.echo(f"WARNING: {problem}", err=True)
    if problems:
        sys.exit(EXIT_WARNING)
    click.echo("ok")


def _with_connection(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    async def run() -> T:
        conn = await open_database(settings.require_database_url())
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


def _when(value: dt.datetime | None) -> str:
    return value.isoformat() if value is not None else "-"


def _total(total: Decimal | None, currency: str | None) -> str:
    return format_money(total, currency) if total is not None and currency else "-"


def _kept(content: bytes | None, exported: str | None, *, missing: str) -> str:
    """Where a document is: the database (the source), and the export copy if one was written."""
    if content is None:
        return missing
    kept = f"in the database ({len(content):,} bytes)"
    return f"{kept}; exported to {exported} on the worker that wrote it" if exported else kept


COMMANDS = [invoices_group]
