"""The daily health report: what it says of a seeded day, sent once a day through the mailer
(an SMTP stand-in; .eml files in `colmena dev`), plain text plus HTML, nothing secret in it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from colmena.actors.backups import take_backup
from colmena.actors.health_report import daily_health_report, gather, send_report
from colmena.config import Settings
from colmena.domain.health_report import (
    CsdExpiry,
    DayActivity,
    HealthFacts,
    LastBackup,
    RateFreshness,
    attention,
    render,
)
from colmena.gateways.mailer import mailer_for
from colmena.store import backups as backups_store
from tests.backups_support import KEY_B64, backup_settings, colmena, operator_env
from tests.bots_support import resources_for
from tests.conftest import queue_counts
from tests.console_data import seed_console
from tests.standins.csd import make_ca, make_csd
from tests.standins.smtp import ReceivedMail, SmtpStandin

OPERATOR = "ops@colmena.example"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def smtp():
    with SmtpStandin() as server:
        yield server


def report_settings(settings: Settings, smtp: SmtpStandin, tmp_path: Path, **more) -> Settings:
    csd = make_csd(make_ca())
    cer, key = csd.write(tmp_path, "csd")
    return backup_settings(settings, tmp_path / "backups").model_copy(
        update={
            "health_report_to": OPERATOR,
            "health_report_local_hour": 0,
            "smtp_host": smtp.host,
            "smtp_port": smtp.port,
            "smtp_starttls": False,
            "smtp_timeout_s": 3.0,
            "cfdi_csd_cer_path": cer,
            "cfdi_csd_key_path": key,
            "cfdi_csd_password": SecretStr(csd.password),
            **more,
        }
    )


def parts(mail: ReceivedMail) -> tuple[str, str]:
    text = mail.message.get_body(preferencelist=("plain",)).get_content()
    html = mail.message.get_body(preferencelist=("html",)).get_content()
    return text, html


def facts(**changes) -> HealthFacts:
    base = HealthFacts(
        day=date(2026, 11, 30),
        zone="America/Caracas",
        activity=DayActivity(
            payments={"approved": 3, "pending": 1},
            approved_minor={"USD": 150000, "MXN": 49900},
            licenses_issued=3,
            licenses_revoked=1,
            invoices={"stamped": 2, "failed": 1},
            invoices_failed_open=1,
        ),
        dead_letters={"payments": 0, "bots": 2},
        broker_error=None,
        outbox_pending=4,
        outbox_oldest_age_s=900,
        rates=[RateFreshness("bcv", "USD/VES", Decimal("36.60"), 3600, stale=True)],
        bots={"running": 5, "crashloop": 1, "unhealthy": 2},
        csd=CsdExpiry(not_after=datetime(2026, 12, 20, tzinfo=UTC), days_left=19),
        csd_error=None,
        csd_warn_days=30,
        last_backup=LastBackup(datetime(2026, 11, 29, 7, tzinfo=UTC), 2_500_000, 2 * 86400),
        backup_max_age_s=26 * 3600,
        generated_at=NOW,
    )
    return HealthFacts(**{**base.__dict__, **changes})


def test_everything_to_look_at_is_listed_first() -> None:
    assert attention(facts()) == [
        "the last good backup is 2.0 days old",
        "2 dead letter(s) in bots",
        "4 outbox message(s) waiting, the oldest 15 min",
        "rate source bcv is stale (USD/VES)",
        "1 bot(s) crashloop",
        "2 bot(s) unhealthy",
        "the CSD expires in 19 days",
        "1 invoice(s) failed to stamp",
    ]
    email = render(facts())
    assert email.subject == "colmena health 2026-11-30: 8 thing(s) to look at"
    assert "  approved  1,500.00 USD" not in email.text  # currencies sorted: MXN first
    assert "approved  499.00 MXN, 1,500.00 USD" in email.text
    assert "licenses  issued 3, revoked 1" in email.text


def test_a_quiet_day_is_all_clear() -> None:
    quiet = facts(
        dead_letters={"payments": 0},
        outbox_pending=0,
        outbox_oldest_age_s=0,
        rates=[RateFreshness("bcv", "USD/VES", Decimal("36.60"), 600, stale=False)],
        bots={"running": 5},
        csd=CsdExpiry(not_after=datetime(2028, 1, 1, tzinfo=UTC), days_left=760),
        last_backup=LastBackup(datetime(2026, 12, 1, 7, tzinfo=UTC), 10, 5 * 3600),
        activity=DayActivity({}, {}, 0, 0, {}, 0),
    )
    assert attention(quiet) == []
    assert render(quiet).subject == "colmena health 2026-11-30: all clear"


def test_html_escapes_whatever_reaches_it() -> None:
    hostile = facts(
        dead_letters={"<script>alert(1)</script>": 1},
        rates=[RateFreshness("b&v\"'", "USD/VES", Decimal("1"), 10, stale=False)],
    )
    email = render(hostile)
    assert "<script>" not in email.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in email.html
    assert "b&amp;v&quot;&#x27;" in email.html
    assert "<script>alert(1)</script>" in email.text  # plain text is not markup


async def test_the_job_sends_the_report_once_a_day_with_nothing_secret(
    settings: Settings, db: asyncpg.Connection, smtp: SmtpStandin, tmp_path: Path
) -> None:
    seeded = await seed_console(db, settings)
    config = report_settings(settings, smtp, tmp_path)
    await take_backup(config, db, database_url=config.require_database_url())
    resources = resources_for(config)
    await resources.start()
    try:
        await daily_health_report(resources)
        await daily_health_report(resources)
    finally:
        await resources.close()
    [mail] = await smtp.wait_for_async(1)
    assert mail.rcpt_tos == [OPERATOR]
    assert mail.message["Subject"].startswith("colmena health ")
    text, html = parts(mail)
    assert "<table" in html and "last backup" in text and "dead letters" in text
    dead = queue_counts(settings.queue_prefix + "bots")[2]
    assert f"dead letters  {dead} (bots {dead})" in text
    assert f"{dead} dead letter(s) in bots" in text
    secrets = [
        *seeded.emails,
        *(tenant.token for tenant in seeded.tenants),
        *(tenant.email for tenant in seeded.tenants),
        KEY_B64,
        config.require_database_url(),
    ]
    for secret in secrets:
        assert secret not in text and secret not in html, secret
    row = await db.fetchrow("SELECT day, recipient, sent_at, message_id FROM health_reports")
    assert row["recipient"] == OPERATOR and row["sent_at"] is not None
    assert row["message_id"] == mail.message["Message-ID"]
    assert await backups_store.report_sent(db, row["day"])


async def test_the_report_of_the_seeded_day_counts_it(
    settings: Settings, db: asyncpg.Connection, smtp: SmtpStandin, tmp_path: Path
) -> None:
    seeded = await seed_console(db, settings)
    config = report_settings(settings, smtp, tmp_path)
    today = datetime.now(UTC).astimezone(config.operator_zone()).date()
    seen = await gather(config, db, today)
    # Seeded over the last six hours: may straddle local midnight, so count both days.
    yesterday = await gather(config, db, today - timedelta(days=1))
    statuses = await db.fetch("SELECT status, count(*) AS n FROM payments GROUP BY status")
    both = {
        status: seen.activity.payments.get(status, 0) + yesterday.activity.payments.get(status, 0)
        for status in {*seen.activity.payments, *yesterday.activity.payments}
    }
    assert both == {row["status"]: row["n"] for row in statuses}
    assert sum(both.values()) == len(seeded.payment_ids)
    dead = queue_counts(settings.queue_prefix + "bots")[2]
    assert dead > 0 and seen.dead_letters is not None and seen.dead_letters["bots"] == dead
    assert seen.csd is not None and seen.csd.days_left > 30
    assert seen.last_backup is None
    assert seen.bots is not None and sum(seen.bots.values()) == len(seeded.tenants)
    message_id = await send_report(config, db, mailer_for(config), today)
    assert message_id is not None
    assert await send_report(config, db, mailer_for(config), today) is None
    again = await send_report(config, db, mailer_for(config), today, again=True)
    assert again is not None and again != message_id
    assert len(await smtp.wait_for_async(2)) == 2


async def test_in_dev_the_report_is_an_eml_file_and_the_cli_prints_or_sends_it(
    settings: Settings, db: asyncpg.Connection, tmp_path: Path
) -> None:
    config = backup_settings(settings, tmp_path / "backups")
    env = operator_env(
        config, COLMENA_ENV="dev", COLMENA_HEALTH_REPORT_TO=OPERATOR, COLMENA_BACKUP_KEYS=KEY_B64
    )
    printed = await colmena(env, "health-report", "--day", "2026-11-30")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("colmena health 2026-11-30: ")
    assert "no good backup exists" in printed.stdout
    sent = await colmena(env, "health-report", "--send", "--day", "2026-11-30")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith(f"sent the report of 2026-11-30 to {OPERATOR}")
    [eml] = list((Path(config.data_dir) / "mail").glob("*.eml"))
    content = eml.read_text()
    assert "Subject: colmena health 2026-11-30:" in content and "text/html" in content
    unset = operator_env(config, COLMENA_ENV="dev")
    refused = await colmena(unset, "health-report", "--send")
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "colmena: COLMENA_HEALTH_REPORT_TO is not set: no one to send the report to"
    )
