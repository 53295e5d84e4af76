"""`colmena invoices`: list and inspect CFDI invoices, retry one, cancel one at the SAT, verify a
period against the SAT's status service, check the issuer's CSD."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TypeVar
from zoneinfo import ZoneInfo

import asyncpg
import click

from colmena.actors.invoice_stamping import QUEUE
from colmena.cli.audit import attribute_operator, record_operator_action
from colmena.config import Settings, SettingsError, load_settings
from colmena.config.dev_stack import load_operator_settings
from colmena.domain.cancellation import (
    CancellationRefused,
    Motive,
    acceptance_deadline,
    disagreement,
    state_of_sat,
)
from colmena.domain.money import format_money
from colmena.gateways.cfdi import CsdError, is_sandbox_stamp
from colmena.gateways.csd import load_csd_signer, read_csd_certificate
from colmena.gateways.sat_status import SatStatusUnavailable, sat_status_client
from colmena.gateways.stamping_config import StampingNotConfigured, csd_source
from colmena.runtime.outbox import publish_now
from colmena.runtime.startup import amqp_publisher, open_database
from colmena.store import cancellations, credit_notes, invoices, outbox
from colmena.store.cancellation_requests import record_request
from colmena.store.cancellations import CancellationRecord
from colmena.store.invoices import STATUSES, InvoiceRecord
from colmena.store.outbox import OutboxMessage
from colmena.store.pool import create_pool

EXIT_WARNING = 1
T = TypeVar("T")


@click.group("invoices")
def invoices_group() -> None:
    """CFDI invoices: list, show, retry, cancel, verify, check-csd."""


@invoices_group.command("list")
@click.option(
    "--status", type=click.Choice(STATUSES), default=None, help="only invoices in this status"
)
@click.option(
    "--state",
    type=click.Choice([*invoices.LIST_STATES, "global"]),
    default=None,
    help="only invoices at this point of their life: stamped (in force), cancelling, cancelled, "
    "egreso (credit notes), global (the CFDI global for público en general)",
)
@click.option("--limit", type=click.IntRange(min=1, max=10_000), default=50, show_default=True)
def list_command(status: str | None, state: str | None, limit: int) -> None:
    """The most recent invoices, newest first."""
    if status is not None and state is not None:
        raise click.UsageError("give --status or --state, not both")
    if state == "global":
        _list_global(limit)
        return

    async def run(conn: asyncpg.Connection) -> list[invoices.InvoiceSummary]:
        if state is not None:
            return await invoices.in_state(conn, state, limit=limit)
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


def _list_global(limit: int) -> None:
    """The CFDI global invoices, newest first: each covers the period's sales without an RFC."""

    async def run(conn: asyncpg.Connection) -> list[invoices.GlobalSummary]:
        return await invoices.recent_global(conn, limit=limit)

    rows = _with_connection(load_operator_settings(), run)
    if not rows:
        click.echo("no global invoices")
        return
    click.echo(
        f"{'id':>6}  {'period':<16} {'status':<10} {'folio':<10} {'payments':>8} {'total':>16}  "
        f"{'uuid':<36}  {'tries':>5}  code"
    )
    for row in rows:
        every = "monthly" if row.periodicity == "04" else "daily"
        period = f"{row.period_first.isoformat()} {every}"
        click.echo(
            f"{row.id:>6}  {period:<16} {row.status:<10} {row.series + str(row.folio):<10} "
            f"{row.payments:>8} {_total(row.total, 'MXN'):>16}  {row.uuid or '-':<36}  "
            f"{row.attempts:>5}  {row.failure_code or '-'}"
        )


@invoices_group.command("show")
@click.argument("invoice_id", type=int)
def show_command(invoice_id: int) -> None:
    """One invoice in full, with the PAC's code and message when it was refused."""

    async def run(
        conn: asyncpg.Connection,
    ) -> tuple[InvoiceRecord | None, CancellationRecord | None]:
        return await invoices.get(conn, invoice_id), await cancellations.get(conn, invoice_id)

    invoice, cancellation = _with_connection(load_operator_settings(), run)
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
    if cancellation is not None:
        fields += _cancellation_fields(cancellation)
    elif invoice.cancel_requested_at is not None:
        fields.append(
            (
                "cancellation requested",
                _when(invoice.cancel_requested_at) + " (before the stamp: never sent to the SAT)",
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


def _cancellation_fields(cancellation: CancellationRecord) -> list[tuple[str, str]]:
    """What `show` says of a cancellation: its state, why the receiver must accept or not,
    and the PAC's and the SAT's last answers."""
    motive = cancellation.motive + (
        f" (replaced by {cancellation.replacement_uuid})" if cancellation.replacement_uuid else ""
    )
    if cancellation.needs_acceptance:
        acceptance = (
            "needed (RMF 2.7.1.35: over $1,000 MXN, not to público en general or abroad, past "
            "the business day after issuance); the receiver has until "
            f"{acceptance_deadline(cancellation.requested_at).isoformat()} (RMF 2.7.1.34)"
        )
    else:
        acceptance = "not needed (RMF 2.7.1.35)"
    fields = [
        ("cancellation", f"{cancellation.state} (asked {_when(cancellation.requested_at)})"),
        ("cancel motive", motive),
        ("receiver's acceptance", acceptance),
    ]
    if cancellation.pac_code is not None:
        pac = cancellation.pac_code + (
            f": {cancellation.pac_message}" if cancellation.pac_message else ""
        )
        fields.append(("PAC answer", pac))
    if cancellation.sat_estado is not None:
        fields.append(
            (
                "SAT status",
                f"{cancellation.sat_estado}; {cancellation.sat_es_cancelable or '-'}; "
                f"{cancellation.sat_estatus or '-'} ({cancellation.polls} polls)",
            )
        )
    if cancellation.next_poll_at is not None:
        fields.append(("next check", _when(cancellation.next_poll_at)))
    if cancellation.last_error is not None:
        fields.append(("last error (retrying)", cancellation.last_error))
    return fields


@invoices_group.command("cancel")
@click.argument("invoice_id", type=int)
@click.option(
    "--motive",
    type=click.Choice([m.value for m in Motive]),
    required=True,
    help="SAT motive: 01 errors, replaced (needs --replacement); 02 errors; 03 not carried out",
)
@click.option("--replacement", default=None, help="UUID of the CFDI that replaces it (motive 01)")
def cancel_command(invoice_id: int, motive: str, replacement: str | None) -> None:
    """Cancel a stamped invoice at the SAT through the PAC; `show` follows it to the end."""
    settings = load_operator_settings()

    async def run(conn: asyncpg.Connection) -> tuple[CancellationRecord, OutboxMessage | None]:
        async with conn.transaction():
            await attribute_operator(conn, "invoices cancel")
            record = await record_request(
                conn,
                invoice_id,
                motive=motive,
                replacement_uuid=replacement,
                source="operator",
                now=dt.datetime.now(dt.UTC),
            )
            row = await outbox.record(
                conn, queue=QUEUE, actor="file_cancellation", args=[invoice_id]
            )
        return record, row

    try:
        record, row = _with_connection(settings, run)
    except CancellationRefused as refused:
        raise click.ClickException(str(refused)) from None
    published = asyncio.run(_publish(settings, row)) if settings.broker_url is not None else False
    how = "published" if published else "queued in the outbox (the scheduler's relay publishes it)"
    acceptance = "needs" if record.needs_acceptance else "does not need"
    click.echo(
        f"invoice {invoice_id}: cancellation with motive {record.motive} {how}; it {acceptance} "
        "the receiver's acceptance"
    )


@invoices_group.command("verify")
@click.option("--from", "start", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--to", "end", type=click.DateTime(["%Y-%m-%d"]), required=True)
def verify_command(start: dt.datetime, end: dt.datetime) -> None:
    """Ask the SAT's status service about every invoice stamped from --from to --to (Mexico
    City days, both included) and list each that disagrees with colmena; exit 1 on any."""
    if end < start:
        raise click.BadParameter("--to is before --from", param_hint="--to")
    settings = load_operator_settings()
    mexico = ZoneInfo("America/Mexico_City")

    async def run(conn: asyncpg.Connection) -> list[cancellations.StampedInvoice]:
        return await cancellations.stamped_between(
            conn,
            start=start.replace(tzinfo=mexico),
            end=(end + dt.timedelta(days=1)).replace(tzinfo=mexico),
        )

    stamped = _with_connection(settings, run)
    client = sat_status_client(settings)
    problems = 0
    for invoice in stamped:
        try:
            sat_state = state_of_sat(client.status(invoice.stamped_xml))
        except SatStatusUnavailable as exc:
            problems += 1
            click.echo(
                f"{invoice.invoice_id:>6}  {invoice.label:<10} {invoice.uuid}  not asked: {exc}"
            )
            continue
        wrong = disagreement(invoice.cancellation, sat_state)
        if wrong is not None:
            problems += 1
            click.echo(f"{invoice.invoice_id:>6}  {invoice.label:<10} {invoice.uuid}  {wrong}")
    click.echo(f"{len(stamped)} invoices checked, {problems} disagreements")
    if problems:
        sys.exit(EXIT_WARNING)


@invoices_group.command("retry")
@click.argument("invoice_id", type=int)
def retry_command(invoice_id: int) -> None:
    """Queue the invoice's next step again: stamping (a refused one is rebuilt from the payment
    and sealed anew) or, once stamped, the PDF and email."""
    settings = load_operator_settings()

    async def run(conn: asyncpg.Connection) -> tuple[str, OutboxMessage | None]:
        async with conn.transaction():
            await attribute_operator(conn, "invoices retry")
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
                refund = await credit_notes.refund_of(conn, invoice.id)
                if refund is not None:  # a credit note is issued by its refund's actor
                    step, actor, args = (
                        "credit note",
                        "issue_credit_note",
                        [
                            invoice.payment_id,
                            refund,
                        ],
                    )
                else:
                    step, actor, args = "stamping", "stamp_invoice", [invoice.payment_id]
            row = await outbox.record(conn, queue=QUEUE, actor=actor, args=args)
            await record_operator_action(
                conn,
                "invoices retry",
                action="invoice.retry",
                subject_kind="invoice",
                subject_id=str(invoice.id),
                after={"step": step},
            )
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
