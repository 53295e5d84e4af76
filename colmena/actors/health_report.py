"""The daily health report email to the operator (COLMENA_HEALTH_REPORT_TO).

- `gather`: the facts of one local day from the store (payments, licenses, invoices, outbox,
  rates, bots, last backup), the broker (dead letters per queue) and the CSD file; a part that
  does not answer is reported as such rather than stopping the report.
- `send_report`: render (`colmena.domain.health_report`) and send through the process's mailer
  (SMTP, or .eml files in `colmena dev`), once per day: the day's `health_reports` row is locked
  while sending and marked sent after the server accepted the message.
- job `health-report`: every ten minutes; once COLMENA_HEALTH_REPORT_LOCAL_HOUR has passed, it
  sends the report of the previous local day if it has not gone out yet, so a scheduler that
  was down at that hour sends it when it returns.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import asyncpg
import structlog
from apscheduler.triggers.interval import IntervalTrigger

from colmena.config import Settings, SettingsError
from colmena.domain.backup_retention import local_day_bounds, report_day
from colmena.domain.health_report import (
    CsdExpiry,
    HealthEmail,
    HealthFacts,
    LastBackup,
    RateFreshness,
    render,
)
from colmena.errors import ColmenaError
from colmena.gateways.csd import read_csd_certificate
from colmena.gateways.mail import RenderedEmail
from colmena.gateways.mailer import MAILER, Mailer
from colmena.gateways.stamping_config import csd_source
from colmena.runtime.queue_admin import BrokerUnreachable, queue_admin_for
from colmena.runtime.queues import DOMAIN_QUEUES
from colmena.runtime.resources import Resources
from colmena.runtime.scheduler import scheduled
from colmena.store import backups as backups_store
from colmena.store import ops as ops_store
from colmena.store.health_report import day_activity
from colmena.store.outbox import backlog

log = structlog.get_logger(__name__)


async def _dead_letters(settings: Settings) -> tuple[dict[str, int] | None, str | None]:
    try:
        admin = queue_admin_for(settings, None)
    except SettingsError:
        return None, "no broker configured (COLMENA_BROKER_URL)"
    try:
        depths = await admin.depths(DOMAIN_QUEUES)
    except BrokerUnreachable as exc:
        return None, str(exc)
    finally:
        await admin.close()
    return {depth.queue: depth.dead for depth in depths}, None


async def _csd(settings: Settings, now: datetime) -> tuple[CsdExpiry | None, str | None]:
    if settings.cfdi_csd_cer_path is None:
        return None, None
    try:
        info = await asyncio.to_thread(read_csd_certificate, csd_source(settings))
    except ColmenaError as exc:
        return None, str(exc)
    return CsdExpiry(not_after=info.not_after, days_left=info.days_left(now)), None


async def gather(
    settings: Settings, conn: asyncpg.Connection, day: date, *, now: datetime | None = None
) -> HealthFacts:
    """Everything the report of `day` (a local day of COLMENA_OPERATOR_TIME_ZONE) says."""
    moment = now or datetime.now(UTC)
    start, end = local_day_bounds(day, settings.operator_zone())
    activity = await day_activity(conn, start, end)
    pending, oldest = await backlog(conn)
    found_rates = await ops_store.last_rates(conn)
    rates = None
    if found_rates is not None:
        latest, stale = found_rates
        rates = [
            RateFreshness(
                source=row.source,
                pair=row.pair,
                value=row.value,
                age_s=(moment - row.last_seen_at).total_seconds(),
                stale=row.source in stale,
            )
            for row in latest
        ]
    bots = await ops_store.bots_by_state(conn)
    last = await backups_store.last_good_backup(conn)
    last_backup = None
    if last is not None and last.finished_at is not None:
        last_backup = LastBackup(
            finished_at=last.finished_at,
            size_bytes=last.size_bytes,
            age_s=(moment - last.finished_at).total_seconds(),
        )
    dead, broker_error = await _dead_letters(settings)
    csd, csd_error = await _csd(settings, moment)
    return HealthFacts(
        day=day,
        zone=settings.operator_time_zone,
        activity=activity,
        dead_letters=dead,
        broker_error=broker_error,
        outbox_pending=pending,
        outbox_oldest_age_s=oldest,
        rates=rates,
        bots=bots,
        csd=csd,
        csd_error=csd_error,
        csd_warn_days=settings.cfdi_csd_warn_days,
        last_backup=last_backup,
        backup_max_age_s=settings.backup_max_age_hours * 3600,
        generated_at=moment,
    )


def _rendered(email: HealthEmail) -> RenderedEmail:
    return RenderedEmail(subject=email.subject, text=email.text, html=email.html)


async def send_report(
    settings: Settings,
    conn: asyncpg.Connection,
    mailer: Mailer,
    day: date,
    *,
    now: datetime | None = None,
    again: bool = False,
) -> str | None:
    """Send the report of `day` to COLMENA_HEALTH_REPORT_TO; its Message-ID, or None when it had
    gone out already (`again` sends it anyway, as `colmena health-report --send` does)."""
    recipient = settings.health_report_to
    if recipient is None:
        raise SettingsError("COLMENA_HEALTH_REPORT_TO is not set: no one to send the report to")
    async with conn.transaction():
        if not await backups_store.claim_report(conn, day, recipient) and not again:
            return None
        email = render(await gather(settings, conn, day, now=now))
        message_id = await mailer.send_email(recipient, _rendered(email))
        await backups_store.mark_report_sent(conn, day, recipient=recipient, message_id=message_id)
    log.info("health report sent", day=day.isoformat(), message_id=message_id)
    return message_id


@scheduled("health-report", IntervalTrigger(minutes=10))
async def daily_health_report(resources: Resources) -> None:
    """Send the previous local day's report once COLMENA_HEALTH_REPORT_LOCAL_HOUR has passed."""
    settings = resources.settings
    if settings.health_report_to is None:
        return
    day = report_day(datetime.now(UTC), settings.health_report_local_hour, settings.operator_zone())
    async with resources.pool.acquire() as conn:
        if await backups_store.report_sent(conn, day):
            return
        await send_report(settings, conn, resources.shared(MAILER), day)
