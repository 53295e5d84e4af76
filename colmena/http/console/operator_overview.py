"""The operator's first page: what `colmena status` says, and what today looks like.

Queue depths and consumers, dead letters per queue, the outbox backlog, payments, licenses and
invoices since the operators' midnight, the last rates and their freshness, bots by state, the
CSD's expiry and the last good backup, each a number linking to its page; payments per hour over
the last 24 hours and BCV against Binance P2P over 30 days as small charts with their numbers
as text. The broker part is best effort, as in `colmena status`: with RabbitMQ down the database
half is what the operator needs to see.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from aiohttp import web

from colmena.config import Settings
from colmena.domain.console_charts import bar_chart, hour_buckets, line_chart
from colmena.gateways.cfdi import CsdError, CsdInfo, inspect_csd
from colmena.http.console.operator_broker import BrokerUnavailable, broker_of
from colmena.http.console.operator_common import connection, show
from colmena.http.context import SETTINGS
from colmena.runtime.queues import DOMAIN_QUEUES
from colmena.store import backups, ops
from colmena.store import console_queries as queries
from colmena.store.outbox import backlog

RATE_SERIES = [("bcv", "USD/VES"), ("binance", "USDT/VES")]
RATE_LABELS = {"bcv": "BCV (USD/VES)", "binance": "Binance P2P (USDT/VES)"}
CHART_DAYS = 30


@dataclass(frozen=True)
class CsdState:
    info: CsdInfo | None
    days_left: int | None
    warn: bool
    problem: str | None


def _read_csd(settings: Settings, now: datetime) -> CsdState | None:
    """The public certificate's validity (the ingress holds no CSD key: none is needed)."""
    path = settings.cfdi_csd_cer_path
    if path is None:
        return None
    try:
        info = inspect_csd(path.read_bytes())
    except OSError as exc:
        return CsdState(None, None, True, f"cannot read {path.name}: {exc.strerror}")
    except (CsdError, ValueError) as exc:
        return CsdState(None, None, True, str(exc))
    days_left = info.days_left(now)
    return CsdState(info, days_left, days_left < settings.cfdi_csd_warn_days, None)


def operators_midnight(now: datetime, settings: Settings) -> datetime:
    zone = settings.operator_zone()
    return datetime.combine(now.astimezone(zone).date(), time(), zone).astimezone(UTC)


async def overview(request: web.Request) -> web.Response:
    settings = request.config_dict[SETTINGS]
    now = datetime.now(UTC)
    midnight = operators_midnight(now, settings)
    first_day = now.date() - timedelta(days=CHART_DAYS)
    async with connection(request) as conn:
        pending, oldest = await backlog(conn)
        rates = await ops.last_rates(conn)
        bots = await ops.bots_by_state(conn)
        today = await queries.counts_since(conn, midnight)
        hourly = await queries.payments_per_hour(conn, now - timedelta(hours=23), now)
        series = await queries.daily_rates(conn, RATE_SERIES, first_day)
        backup = await backups.last_good_backup(conn)
    try:
        queues, broker_error = await broker_of(request).depths(DOMAIN_QUEUES), None
    except BrokerUnavailable as exc:
        queues, broker_error = None, str(exc)
    csd = await asyncio.to_thread(_read_csd, settings, now)
    zone = settings.operator_zone()
    hours = hour_buckets(now - timedelta(hours=23), 24, hourly)
    payments_chart = bar_chart(
        [(hour.astimezone(zone).strftime("%H:00"), count) for hour, count in hours]
    )
    rates_chart = line_chart(
        {RATE_LABELS[source]: series[(source, pair)] for source, pair in RATE_SERIES},
        first=first_day,
        last=now.date(),
    )
    latest, stale = rates if rates is not None else ([], set())
    return show(
        request,
        "overview.html",
        {
            "queues": queues,
            "broker_error": broker_error,
            "dead_letters": None if queues is None else sum(depth.dead for depth in queues),
            "outbox_pending": pending,
            "outbox_oldest_s": oldest,
            "today": today,
            "midnight": midnight,
            "rates": latest,
            "stale_sources": stale,
            "rates_age": {row.id: (now - row.last_seen_at).total_seconds() for row in latest},
            "bots": bots,
            "csd": csd,
            "backup": backup,
            "backup_age": None
            if backup is None or backup.finished_at is None
            else (now - backup.finished_at).total_seconds(),
            "payments_chart": payments_chart,
            "rates_chart": rates_chart,
            "today_date": now.astimezone(zone).date(),
            "chart_first": first_day,
        },
    )
