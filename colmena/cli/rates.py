"""`colmena rates`: scrape a source now, publish a suspect value, list what was stored.

Exit codes: 0 when something current is published (accepted or unchanged), 1 when the scrape
failed or kept nothing publishable (the line says why), 2 for settings or database trouble.

Against a running `colmena dev` (same directory, no COLMENA_DATABASE_URL) the commands reach its
database, and a scrape reads the recorded sandbox dev serves for each source it has no URL
configured for, as dev's own scheduled scrapes do. Sandbox values are labelled `[sandbox]`.
"""

from __future__ import annotations

import asyncpg
import click

from colmena.cli.audit import attribute_operator
from colmena.cli.database import with_database
from colmena.config import Settings, load_settings
from colmena.config.dev_stack import load_operator_settings, operator_settings
from colmena.domain.rates import AcceptRefused, Source
from colmena.gateways import rate_sources
from colmena.store import rates as store
from colmena.store.rate_keeping import ScrapeReport, accept, scrape
from colmena.store.rates import RateRow


def _describe(row: RateRow) -> str:
    quotes = (
        f" (buy {row.buy:f}, sell {row.sell:f})"
        if row.buy is not None and row.sell is not None
        else ""
    )
    label = " [sandbox]" if row.sandbox else ""
    return (
        f"#{row.id} {row.source}{label} {row.pair} {row.value:f}{quotes} "
        f"effective {row.effective_date}"
    )


def _scrape_settings() -> Settings:
    """The operator settings, pointed like the running `colmena dev`'s at its rate sandboxes."""
    settings, stack = operator_settings(load_settings())
    return rate_sources.with_sandboxes(settings, stack.sandboxes if stack else {})


def _print_report(report: ScrapeReport) -> None:
    for result in report.results:
        line = f"{_describe(result.row)}: {result.action}"
        if result.action == "unchanged":
            line += " (no new row)"
        elif result.action == "suspect":
            line += (
                f", not published ({result.row.reason}); "
                f"`colmena rates accept {result.row.id}` publishes it"
            )
        elif result.action in ("rejected", "accepted"):
            line += f" ({result.row.reason})"
        click.echo(line)


@click.group("rates")
def rates_group() -> None:
    """Exchange rates: BCV official and Binance P2P USDT/VES."""


@rates_group.command("scrape")
@click.argument("source", type=click.Choice([s.value for s in Source]))
def scrape_command(source: str) -> None:
    """Scrape SOURCE now and print what was stored, or why it was refused."""
    settings = _scrape_settings()
    report = with_database(
        settings, lambda conn: scrape(Source(source), conn, settings, fetch=rate_sources.fetch)
    )
    _print_report(report)
    if report.ok:
        return
    reason = report.error or report.outcome
    stale = f"; {source} is now stale" if report.stale else ""
    raise click.ClickException(f"{source} scrape {report.outcome}: {reason}{stale}")


@rates_group.command("accept")
@click.argument("rate_id", type=click.IntRange(min=1))
def accept_command(rate_id: int) -> None:
    """Publish suspect rate RATE_ID (see `colmena rates list --status suspect`)."""

    async def work(conn: asyncpg.Connection) -> tuple[RateRow, bool]:
        async with conn.transaction():
            await attribute_operator(conn, "rates accept")
            return await accept(conn, rate_id)

    try:
        row, changed = with_database(load_operator_settings(), work)
    except AcceptRefused as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{_describe(row)}: {'published' if changed else 'already published'} ({row.status})"
    )


@rates_group.command("list")
@click.option("--source", type=click.Choice([s.value for s in Source]), default=None)
@click.option(
    "--status", type=click.Choice(["accepted", "confirmed", "suspect", "rejected"]), default=None
)
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
def list_command(source: str | None, status: str | None, limit: int) -> None:
    """Recent stored rates (every status, newest first) and each source's health."""

    async def load(conn: asyncpg.Connection) -> tuple[list[RateRow], list[store.SourceHealth]]:
        return await store.recent(
            conn, source=source, status=status, limit=limit
        ), await store.sources(conn)

    rows, health = with_database(load_operator_settings(), load)
    for h in health:
        state = "STALE" if h.stale else "ok"
        last = h.last_success_at.isoformat(timespec="seconds") if h.last_success_at else "never"
        failures = f"{h.consecutive_failures} failure(s) in a row"
        click.echo(f"{h.source}: {state}, last success {last}, {failures}")
    if not rows:
        click.echo("no rates stored")
    for row in rows:
        fetched = row.fetched_at.isoformat(timespec="seconds")
        click.echo(f"{_describe(row)} fetched {fetched}: {row.status} ({row.reason})")


COMMANDS = [rates_group]
