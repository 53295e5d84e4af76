"""Operators' reports (`colmena report payments|invoices|licenses|audit`) and the reconciliation
report that `colmena reconcile report` runs (`colmena.cli.reconcile`).

Reports stream: rows come through a server-side cursor and are written as they come, so a year
of payments costs one batch of memory. Dates are the operator's (COLMENA_OPERATOR_TIME_ZONE).
A range that is unreadable, reversed or longer than COLMENA_REPORT_MAX_DAYS is one line and
exit 2; `reconcile report` exits 1 when anything disagrees, so a cron job can alert on it.
"""

from __future__ import annotations

import asyncio
import sys
from typing import IO, NoReturn

import asyncpg
import click

from colmena.config import Settings
from colmena.config.dev_stack import load_operator_settings
from colmena.domain.reconciliation import Disagreement
from colmena.domain.report_rows import (
    FORMATS,
    PROVIDERS,
    SPECS,
    Renderer,
    ReportRange,
    ReportRangeError,
    json_text,
    parse_range,
    totals_lines,
)
from colmena.gateways.provider_check import ProviderCheck, run_provider_check
from colmena.gateways.provider_records import ProviderRecordsError
from colmena.runtime.startup import open_database
from colmena.store import audit, reconciliation, reports

EXIT_DISAGREES = 1
EXIT_BAD_INPUT = 2


def _fail(message: str) -> NoReturn:
    click.echo(f"colmena: {message}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def _range(settings: Settings, start: str, end: str) -> ReportRange:
    try:
        return parse_range(
            start, end, zone=settings.operator_zone(), max_days=settings.report_max_days
        )
    except ReportRangeError as exc:
        _fail(str(exc))


RANGE_OPTIONS = (
    click.option(
        "--from", "start", required=True, help="first day (2026-03-01) or moment, operator's zone"
    ),
    click.option("--to", "end", required=True, help="last day, included (or a moment, excluded)"),
)


async def _write_report(
    settings: Settings,
    kind: str,
    period: ReportRange,
    provider: str | None,
    renderer: Renderer,
    out: IO[bytes],
) -> None:
    conn = await open_database(settings.require_database_url())
    try:
        if kind == "audit":
            click.echo(f"audit chain head {await _sealed_head(conn)}", err=True)
        out.write(renderer.head().encode())
        async for row in reports.report_rows(
            conn,
            kind,
            period.start,
            period.end,
            provider=provider,
            fetch=settings.report_fetch_rows,
        ):
            out.write(renderer.row(row).encode())
        out.write(renderer.tail().encode())
        out.flush()
    except asyncpg.UndefinedTableError:
        _fail(f"the {kind} report's table is not in this database: run `colmena migrate`")
    finally:
        await conn.close()


async def _sealed_head(conn: asyncpg.Connection) -> str:
    """Seal what is waiting, then name the chain's head: an export that states it can be held
    against the database later (`colmena audit verify --head SEQ:HASH`)."""
    await audit.seal(conn)
    seq, digest = await audit.head(conn)
    return f"{seq}:{digest.hex()}"


def _report_command(kind: str) -> click.Command:
    def run(
        start: str, end: str, fmt: str, output: IO[bytes] | None, provider: str | None = None
    ) -> None:
        settings = load_operator_settings()
        period = _range(settings, start, end)
        renderer = Renderer(SPECS[kind], period, fmt, settings.operator_time_zone)
        out = output or sys.stdout.buffer
        asyncio.run(_write_report(settings, kind, period, provider, renderer, out))
        if fmt == "csv":
            click.echo(f"{renderer.count} row(s)", err=True)
            for line in totals_lines(renderer.totals):
                click.echo(line, err=True)

    run.__doc__ = (
        f"The {kind} of a range, in the operator's time zone, with totals per currency and "
        "status. CSV is RFC 4180, UTF-8 with a byte-order mark (spreadsheets keep accents)."
    )
    command = click.option("--output", type=click.File("wb"), help="write here, not stdout")(run)
    command = click.option(
        "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True
    )(command)
    if kind != "audit":
        command = click.option("--provider", type=click.Choice(PROVIDERS))(command)
    for option in reversed(RANGE_OPTIONS):
        command = option(command)
    return click.command(kind)(command)


@click.group("report")
def report() -> None:
    """Payments, invoices, licenses and the audit trail of a range (table, CSV or JSON)."""


for _kind in SPECS:
    report.add_command(_report_command(_kind))


async def _reconcile(
    settings: Settings, period: ReportRange, provider: str | None, provider_check: bool
) -> tuple[list[Disagreement], ProviderCheck | None]:
    conn = await open_database(settings.require_database_url())
    try:
        found = await reconciliation.find_disagreements(
            conn,
            period.start,
            period.end,
            provider=provider,
            grace=settings.reconcile_grace(),
            fetch=settings.report_fetch_rows,
        )
        checked = None
        if provider_check:
            try:
                checked = await run_provider_check(
                    conn, settings, period.start, period.end, provider=provider
                )
            except ProviderRecordsError as exc:
                _fail(str(exc))
        return found, checked
    finally:
        await conn.close()


@click.command("report")
@RANGE_OPTIONS[0]
@RANGE_OPTIONS[1]
@click.option("--provider", type=click.Choice(PROVIDERS), help="only this provider's payments")
@click.option(
    "--provider-check",
    is_flag=True,
    help="also compare with the providers' own records (Stripe balance transactions, Mercado "
    "Pago payments search)",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def reconcile_report(
    start: str, end: str, provider: str | None, provider_check: bool, fmt: str
) -> None:
    """Every disagreement among provider, payment, license, invoice and order for payments
    created in the range. Exit 1 when anything disagrees (for a cron job's alert)."""
    settings = load_operator_settings()
    period = _range(settings, start, end)
    found, checked = asyncio.run(_reconcile(settings, period, provider, provider_check))
    if checked is not None:
        found += checked.disagreements
        for name, why in checked.skipped.items():
            click.echo(f"colmena: {name} not checked: {why}", err=True)
    if fmt == "json":
        document = {
            "from": period.local(period.start),
            "to": period.local(period.end),
            "time_zone": settings.operator_time_zone,
            "provider_checked": list(checked.checked) if checked else [],
            "ok": not found,
            "disagreements": [d.as_json() for d in found],
        }
        click.echo(json_text(document))
    else:
        for d in found:
            who = d.payment_id if d.payment_id is not None else "-"
            click.echo(
                f"{who}\t{d.provider or '-'}\t{d.provider_payment_id or '-'}\t{d.kind}\t{d.detail}"
            )
        click.echo(
            f"{len(found)} disagreement(s) from {period.local(period.start)} to "
            f"{period.local(period.end)}"
            + (f"; checked with {', '.join(checked.checked)}" if checked else ""),
            err=True,
        )
    if found:
        sys.exit(EXIT_DISAGREES)


COMMANDS = [report]
