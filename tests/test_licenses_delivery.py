"""License delivery end to end: a real worker on RabbitMQ, PostgreSQL, a real SMTP server, and
the real ingress for the download."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from colmena.actors.licenses import LicenseEmailBusy, deliver_license, send_email
from colmena.config import Settings
from colmena.domain.licensing import load_private_key, verify_license_key
from colmena.runtime.follow_ups import LocalFollowUps, leave_committed
from colmena.runtime.resources import Resources
from colmena.store import payments
from tests.conftest import queue_counts, wait_for
from tests.licenses_support import (
    SIGNING_KEY,
    drain,
    insert_payment,
    license_settings,
    resources_for,
    run_cli,
    token_in,
    zip_members,
)
from tests.standins.smtp import SmtpStandin, free_port

PUBLIC_KEY = load_private_key(SIGNING_KEY.private_pem).public_key()


def product_archives(settings: Settings) -> list[str]:
    """The products whose archive this host's cache holds: everything the delivery wrote."""
    return sorted(p.name.rsplit("-", 1)[0] for p in settings.license_archive_path.iterdir())


@pytest.fixture
def smtp():
    with SmtpStandin() as server:
        yield server


async def test_approved_payment_gives_one_license_one_package_one_email_whose_link_works_once(
    settings, smtp, tmp_path, db, start_worker, make_client
) -> None:
    active = license_settings(settings, smtp, tmp_path)
    payment_id = await insert_payment(db)
    system = start_worker(settings_override=active)
    system.broker.get_actor("deliver_license").send(payment_id)

    [mail] = await smtp.wait_for_async(1)
    assert mail.rcpt_tos == ["ana@example.com"]
    assert mail.message["Subject"] == "Tu licencia de colmena-bot (enterprise) está lista"
    text = mail.message.get_body(preferencelist=("plain",)).get_content()
    assert "https://shop.example.com/downloads/" in text
    token = token_in(mail)
    await wait_for(lambda: db.fetchval("SELECT sent_at IS NOT NULL FROM license_emails"))

    license = await db.fetchrow("SELECT * FROM licenses")
    assert await db.fetchval("SELECT count(*) FROM licenses") == 1
    assert product_archives(active) == ["colmena-bot"]  # the product's, and no package file
    assert await db.fetchval("SELECT count(*) FROM download_links") == 1
    stored = await db.fetchrow(
        "SELECT token_sha256, max_downloads, used, expires_at - created_at AS ttl "
        "FROM download_links"
    )
    assert bytes(stored["token_sha256"]) == hashlib.sha256(token.encode()).digest()
    assert (stored["max_downloads"], stored["used"], stored["ttl"].total_seconds()) == (
        1,
        0,
        72 * 3600,
    )

    client = await make_client(active)
    for _ in range(2):  # a mail scanner, then the customer: neither spends the link
        page = await client.get(f"/downloads/{token}")
        assert page.status == 200
        body = await page.text()
        assert "colmena-bot (enterprise)" in body and '<form method="post">' in body
        assert "form-action 'self'" in page.headers["Content-Security-Policy"]
    assert await db.fetchval("SELECT used FROM download_links") == 0

    download = await client.post(f"/downloads/{token}")
    assert download.status == 200
    assert download.headers["Content-Disposition"] == 'attachment; filename="colmena-bot.zip"'
    assert download.headers["Cache-Control"] == "no-store"
    assert download.headers["Referrer-Policy"] == "no-referrer"
    assert download.headers["Content-Type"] == "application/zip"
    body = await download.read()
    assert hashlib.sha256(body).hexdigest() == license["package_sha256"]
    assert len(body) == license["package_size"] == int(download.headers["Content-Length"])
    members = zip_members(body)
    assert set(members) == {"README.txt", "bin/colmena-bot", "license.key", "license.json"}
    proved = verify_license_key(members["license.key"].decode(), PUBLIC_KEY)
    assert (proved.license_id, proved.product, proved.edition, proved.seats) == (
        str(license["id"]),
        "colmena-bot",
        "enterprise",
        3,
    )
    assert proved.customer_email == "ana@example.com" and proved.perpetual

    again = await client.post(f"/downloads/{token}")
    assert again.status == 410
    assert "ya se usó" in await again.text()
    assert (await client.get(f"/downloads/{token}")).status == 410
    log = await db.fetch(
        "SELECT outcome, link_id IS NOT NULL AS linked FROM download_log ORDER BY id"
    )
    assert [(r["outcome"], r["linked"]) for r in log] == [("ok", True), ("used", True)]


async def test_duplicate_and_concurrent_deliveries_give_one_license_and_one_email(
    settings, smtp, tmp_path, db, start_worker
) -> None:
    # A delivery that finds another holding the email's lease retries once the lease runs out
    # (it finds the email sent then): a short lease keeps that wait short, yet far longer than
    # the stand-in SMTP conversation it covers (three COLMENA_SMTP_TIMEOUT_S of 3 s).
    active = license_settings(settings, smtp, tmp_path, license_send_lease_s=10.0)
    payment_id = await insert_payment(db)
    system = start_worker(threads=4, settings_override=active)
    actor = system.broker.get_actor("deliver_license")
    for _ in range(3):  # the same follow-up published three times, handled side by side
        actor.send(payment_id)
    await drain(system.broker, system.worker, settings.queue_prefix + "licenses")
    actor.send(payment_id)  # and once more, long after
    await drain(system.broker, system.worker, settings.queue_prefix + "licenses")

    assert len(smtp.messages) == 1
    assert await db.fetchval("SELECT count(*) FROM licenses") == 1
    assert await db.fetchval("SELECT count(*) FROM license_emails WHERE sent_at IS NOT NULL") == 1
    assert (
        await db.fetchval(
            "SELECT count(*) FROM download_links "
            "WHERE invalidated_at IS NULL AND used < max_downloads"
        )
        == 1
    )
    assert product_archives(active) == ["colmena-bot"]
    assert await db.fetchval("SELECT package_sha256 IS NOT NULL FROM licenses")
    assert queue_counts(settings.queue_prefix + "licenses") == (0, 0, 0)


async def test_concurrent_calls_in_one_process_send_one_email(settings, smtp, tmp_path, db) -> None:
    active = license_settings(settings, smtp, tmp_path)
    payment_id = await insert_payment(db)
    resources = resources_for(active)
    await resources.start()
    try:
        outcomes = await asyncio.gather(
            *(deliver_license(resources, payment_id) for _ in range(6)), return_exceptions=True
        )
        # A delivery that found the email being sent by another is told to retry, and its
        # retry finds it sent.
        assert all(o is None or isinstance(o, LicenseEmailBusy) for o in outcomes), outcomes
        await deliver_license(resources, payment_id)
    finally:
        await resources.close()
    assert len(smtp.messages) == 1
    assert await db.fetchval("SELECT count(*) FROM licenses") == 1
    assert await db.fetchval("SELECT count(*) FROM download_links") == 1
    assert await db.fetchval("SELECT sending_until FROM license_emails") is None


def statements_sent() -> float:
    return REGISTRY.get_sample_value("colmena_db_statements_total") or 0.0


@pytest.fixture
async def delivering(settings, smtp, tmp_path):
    """Resources for calling the licenses actors in this process, started, with licenses set up."""
    resources = resources_for(license_settings(settings, smtp, tmp_path))
    await resources.start()
    yield resources
    await resources.close()


async def deliver_after_settlement(resources: Resources, settled: payments.Payment) -> None:
    """Deliver as a loop worker does right after the settlement that committed ``settled``."""

    async def follow_up() -> None:
        LocalFollowUps(lambda row: False).open()
        leave_committed(settled.id, settled)
        await deliver_license(resources, settled.id)

    await asyncio.create_task(follow_up())


async def test_a_delivery_right_after_its_settlement_issues_in_one_statement(
    delivering, smtp, db
) -> None:
    alone, after_settlement = await insert_payment(db), await insert_payment(db)
    settled = await payments.get(db, after_settlement)
    before = statements_sent()
    await deliver_license(delivering, alone)
    # BEGIN, lock the payment, issue, COMMIT; then the email is marked sent.
    assert statements_sent() - before == 5
    before = statements_sent()
    await deliver_after_settlement(delivering, settled)
    assert statements_sent() - before == 2  # issue, and mark sent
    assert sorted(m.rcpt_tos[0] for m in smtp.messages) == ["ana@example.com"] * 2
    assert (
        await db.fetchval(
            "SELECT count(*) FROM licenses JOIN license_emails e ON e.license_id = licenses.id "
            "WHERE payment_id = $1 AND e.sent_at IS NOT NULL",
            after_settlement,
        )
        == 1
    )


async def test_a_payment_refunded_after_its_settlement_gets_no_license_from_it(
    delivering, smtp, db
) -> None:
    payment_id = await insert_payment(db)
    settled = await payments.get(db, payment_id)
    await payments.set_status(db, payment_id, "refunded", datetime.now(UTC))
    await deliver_after_settlement(delivering, settled)
    assert await db.fetchval("SELECT count(*) FROM licenses") == 0
    assert smtp.messages == []


async def test_deliveries_racing_from_one_settlement_and_from_the_queue_send_one_email(
    delivering, smtp, db
) -> None:
    payment_id = await insert_payment(db)
    settled = await payments.get(db, payment_id)
    outcomes = await asyncio.gather(
        *(deliver_after_settlement(delivering, settled) for _ in range(3)),
        *(deliver_license(delivering, payment_id) for _ in range(3)),
        return_exceptions=True,
    )
    assert all(o is None or isinstance(o, LicenseEmailBusy) for o in outcomes), outcomes
    await deliver_after_settlement(delivering, settled)  # its payment has its license now
    assert len(smtp.messages) == 1
    assert await db.fetchval("SELECT count(*) FROM licenses") == 1
    assert await db.fetchval("SELECT count(*) FROM download_links") == 1
    assert await db.fetchval("SELECT sent_at IS NOT NULL FROM license_emails")


async def test_an_email_whose_worker_died_mid_send_waits_for_its_lease_then_goes_once(
    settings, smtp, tmp_path, db
) -> None:
    active = license_settings(settings, smtp, tmp_path)
    payment_id = await insert_payment(db)
    resources = resources_for(active)
    await resources.start()
    try:
        await deliver_license(resources, payment_id)
        # As if a worker had claimed it again and died before the server answered.
        email_id = await db.fetchval(
            "UPDATE license_emails SET sent_at = NULL, "
            "sending_until = now() + interval '1 hour' RETURNING id"
        )
        with pytest.raises(LicenseEmailBusy) as busy:
            await send_email(resources, email_id)
        # Retried when the lease runs out, not after the backoff: one retry spent waiting.
        assert busy.value.retry_after_s is not None and 3500 < busy.value.retry_after_s < 3700
        assert len(smtp.messages) == 1
        await db.execute("UPDATE license_emails SET sending_until = now() - interval '1 second'")
        await send_email(resources, email_id)
        await send_email(resources, email_id)  # sent now: a duplicate sends nothing
    finally:
        await resources.close()
    assert len(smtp.messages) == 2
    assert await db.fetchval("SELECT attempts FROM license_emails") == 2
    working = await db.fetchval("SELECT count(*) FROM download_links WHERE invalidated_at IS NULL")
    assert working == 1  # the second email's link replaced the first's


async def test_smtp_down_then_up_the_email_arrives_after_retries_with_the_only_working_link(
    settings, tmp_path, db, start_worker, make_client
) -> None:
    smtp = SmtpStandin(port=free_port())  # not started: the server is down
    active = license_settings(
        settings, smtp, tmp_path, max_retries=8, min_backoff_ms=100, max_backoff_ms=800
    )
    payment_id = await insert_payment(db, locale="en-US")
    system = start_worker(settings_override=active)
    system.broker.get_actor("deliver_license").send(payment_id)

    await wait_for(
        lambda: db.fetchval("SELECT attempts >= 2 AND last_error IS NOT NULL FROM license_emails")
    )
    assert await db.fetchval("SELECT sent_at FROM license_emails") is None
    smtp.start()
    try:
        [mail] = await smtp.wait_for_async(1, timeout=20)
        await wait_for(lambda: db.fetchval("SELECT sent_at IS NOT NULL FROM license_emails"))
    finally:
        smtp.stop()
    assert mail.message["Subject"] == "Your colmena-bot (enterprise) license is ready"
    links = await db.fetch(
        "SELECT emailed_at IS NOT NULL AS emailed, invalidated_at IS NULL AS live "
        "FROM download_links"
    )
    assert len(links) >= 3  # one per attempt
    assert [(r["emailed"], r["live"]) for r in links if r["live"]] == [(True, True)]

    client = await make_client(active)
    assert (await client.post(f"/downloads/{token_in(mail)}")).status == 200
    assert len(smtp.messages) == 1


async def test_rejected_email_goes_to_dead_letters_and_resend_recovers_it(
    settings, smtp, tmp_path, db, start_worker, make_client
) -> None:
    active = license_settings(settings, smtp, tmp_path)
    payment_id = await insert_payment(db)
    smtp.reply = "550 5.1.1 mailbox unavailable"
    system = start_worker(settings_override=active)
    system.broker.get_actor("deliver_license").send(payment_id)
    await wait_for(
        lambda: asyncio.to_thread(lambda: queue_counts(settings.queue_prefix + "licenses")[2] == 1)
    )
    assert (
        await db.fetchval("SELECT last_error FROM license_emails")
        == "SMTP delivery failed: server replied 550"
    )
    assert smtp.messages == [] and smtp.refusals == 1  # permanent: never retried

    smtp.reply = None
    license_id = await db.fetchval("SELECT id FROM licenses")
    result = await run_cli(active, ["license", "resend", str(license_id)])
    assert result.exit_code == 0, result.output
    assert "older links no longer work" in result.output
    [mail] = await smtp.wait_for_async(1)
    client = await make_client(active)
    assert (await client.post(f"/downloads/{token_in(mail)}")).status == 200
    emails = await db.fetch(
        "SELECT reason, sent_at IS NOT NULL AS sent, superseded_at IS NOT NULL AS superseded "
        "FROM license_emails ORDER BY id"
    )
    assert [tuple(r) for r in emails] == [("purchase", False, True), ("resend", True, False)]


async def test_refund_revokes_the_license_and_the_status_endpoint_says_so(
    settings, smtp, tmp_path, db, start_worker, make_client
) -> None:
    active = license_settings(settings, smtp, tmp_path)
    payment_id = await insert_payment(db)
    system = start_worker(settings_override=active)
    system.broker.get_actor("deliver_license").send(payment_id)
    [mail] = await smtp.wait_for_async(1)
    key = await db.fetchval("SELECT license_key FROM licenses")
    client = await make_client(active)
    before = await client.get(f"/licenses/{key}/status")
    assert before.status == 200 and (await before.json())["status"] == "valid"

    await db.execute("UPDATE payments SET status = 'refunded' WHERE id = $1", payment_id)
    for _ in range(2):
        system.broker.get_actor("revoke_license").send(payment_id)
    await wait_for(lambda: db.fetchval("SELECT revoked_at IS NOT NULL FROM licenses"))
    await drain(system.broker, system.worker, settings.queue_prefix + "licenses")

    after = await client.get(f"/licenses/{key}/status")
    body = await after.json()
    assert after.status == 200 and body["status"] == "revoked" and body["revoked_at"]
    assert await db.fetchval("SELECT revoked_reason FROM licenses") == "payment refunded"
    token = token_in(mail)
    assert (await client.get(f"/downloads/{token}")).status == 410
    refused = await client.post(f"/downloads/{token}")
    assert refused.status == 410 and "revocada" in await refused.text()


async def test_a_payment_refunded_before_delivery_gets_no_license(
    settings, smtp, tmp_path, db, start_worker
) -> None:
    active = license_settings(settings, smtp, tmp_path)
    payment_id = await insert_payment(db, status="refunded")
    system = start_worker(settings_override=active)
    system.broker.get_actor("revoke_license").send(payment_id)
    system.broker.get_actor("deliver_license").send(payment_id)
    await drain(system.broker, system.worker, settings.queue_prefix + "licenses")
    assert await db.fetchval("SELECT count(*) FROM licenses") == 0
    assert smtp.messages == []


async def test_a_payment_that_is_not_a_license_is_dead_lettered_at_once(
    settings, smtp, tmp_path, db, start_worker
) -> None:
    active = license_settings(settings, smtp, tmp_path)
    payment_id = await insert_payment(db, product_kind="plan")
    system = start_worker(settings_override=active)
    system.broker.get_actor("deliver_license").send(payment_id)
    await wait_for(
        lambda: asyncio.to_thread(
            lambda: queue_counts(settings.queue_prefix + "licenses") == (0, 0, 1)
        )
    )
    assert await db.fetchval("SELECT count(*) FROM licenses") == 0
