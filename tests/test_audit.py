"""The audit trail on a real database: the rows a payment's life writes (who, what, before and
after, why), an operator's command in the trail, and `colmena audit verify` finding each row
altered, deleted or moved behind the application's back."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import uuid

import asyncpg
import pytest

from colmena.actors.payments import settle
from colmena.domain.payment_events import interpret_stripe
from colmena.gateways import sample_events as events
from colmena.store import audit, inbox, invoices
from colmena.store.pool import create_pool
from tests.audit_chain_reference import Link, find_breaks
from tests.licenses_support import (
    PRODUCT,
    deliver_inline,
    insert_payment,
    license_settings,
    run_cli,
)
from tests.payments_support import LICENSE_METADATA
from tests.standins.smtp import SmtpStandin


@pytest.fixture
def smtp():
    with SmtpStandin() as server:
        yield server


async def _rows(db: asyncpg.Connection, kind: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT actor, action, subject_id, before, after, cause FROM audit_events"
        " WHERE subject_kind = $1 ORDER BY id",
        kind,
    )


async def _settle_stripe(settings, event: dict) -> int:
    pool = await create_pool(settings.require_database_url(), min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            inbox_id, _ = await inbox.record_event(
                conn, provider="stripe", event_key=event["id"], kind=event["type"], payload=event
            )
        await settle(pool, inbox_id, lambda stored: interpret_stripe(stored.payload))
    finally:
        await pool.close()
    return inbox_id


async def test_a_payments_life_is_in_the_trail_with_before_after_and_cause(
    db, settings, smtp, tmp_path
) -> None:
    settings = license_settings(settings, smtp, tmp_path)
    metadata = {**LICENSE_METADATA, "product": PRODUCT}
    succeeded = events.stripe_event(
        "payment_intent.succeeded",
        events.payment_intent(payment_intent_id="pi_audit", metadata=metadata),
    )
    await _settle_stripe(settings, succeeded)
    payment_id = await db.fetchval("SELECT id FROM payments WHERE provider_payment_id = 'pi_audit'")

    payment_rows = await _rows(db, "payment")
    assert [row["action"] for row in payment_rows] == ["payment.created", "payment.approved"]
    created, approved = payment_rows
    assert created["before"] is None
    assert created["after"] == {
        "status": "new",
        "amount_minor": 150_000,
        "currency": "MXN",
        "order_id": None,
    }
    assert (approved["before"], approved["after"]) == ({"status": "new"}, {"status": "approved"})
    # The cause is the provider event the transaction applied, named without a statement of
    # its own; the creation's too (its trigger runs at commit, after the event was named).
    assert created["cause"] == approved["cause"] == f"event:stripe:{succeeded['id']}"
    assert created["actor"] == "db:postgres"
    assert {row["subject_id"] for row in payment_rows} == {str(payment_id)}

    await deliver_inline(settings, payment_id, smtp)
    [issued] = await _rows(db, "license")
    assert issued["action"] == "license.issued"
    assert issued["cause"] == f"payment:{payment_id}"
    assert issued["after"]["seats"] == 5
    assert "license_key" not in issued["after"] and "customer_email" not in issued["after"]

    async with db.transaction():
        invoice = await invoices.create(
            db, payment_id=payment_id, issuer_rfc="EKU9003173C9", series="A"
        )
        await invoices.mark_stamped(
            db,
            invoice.id,
            stamped_xml=b"<cfdi/>",
            uuid="3f1e2a4b-0000-4000-8000-000000000001",
            fecha_timbrado=dt.datetime.now(dt.UTC),
            recovered=False,
            xml_path=None,
        )
    created_invoice, stamped = await _rows(db, "invoice")
    assert created_invoice["action"] == "invoice.created"
    assert stamped["action"] == "invoice.stamped"
    assert stamped["before"] == {"status": "pending", "uuid": None}
    assert stamped["after"]["uuid"] == "3f1e2a4b-0000-4000-8000-000000000001"
    assert stamped["cause"] == f"payment:{payment_id}"
    assert not any("xml" in key for row in (created_invoice, stamped) for key in row["after"])

    verdict = await audit.verify_chain(db)
    assert (verdict.ok, verdict.breaks, verdict.unsealed) == (True, [], 0)
    assert verdict.checked == await db.fetchval("SELECT count(*) FROM audit_events")


async def test_attribution_names_who_and_why_and_ends_with_the_transaction(db) -> None:
    payment_id = await insert_payment(db, status="pending")
    async with db.transaction():
        await audit.attribute(db, actor="admin:ana", cause="console")
        await db.execute("UPDATE payments SET status = 'approved' WHERE id = $1", payment_id)
    await db.execute("UPDATE payments SET status = 'refunded' WHERE id = $1", payment_id)
    created, pending, approved, refunded = await _rows(db, "payment")
    # Inserted in a status: recorded as created, then that status reached.
    assert [created["action"], pending["action"]] == ["payment.created", "payment.pending"]
    assert (created["after"]["status"], pending["after"]) == ("new", {"status": "pending"})
    assert (approved["actor"], approved["cause"]) == ("admin:ana", "console")
    # Unattributed: the database session and what the row says.
    assert refunded["actor"] == "db:postgres"
    assert refunded["cause"].startswith("provider:stripe:pi_")


async def test_secrets_never_reach_the_trail(db) -> None:
    await db.execute(
        "INSERT INTO tenants (id, email, plan, token_sha256)"
        " VALUES ('acme', 'a@x.com', 'free', $1)",
        bytes(32),
    )
    await db.execute(
        "INSERT INTO provider_keys (tenant_id, provider, ciphertext, last4, key_version)"
        " VALUES ('acme', 'binance', 'gAAAA-secret-ciphertext', '1234', 'k1')"
    )
    await db.execute(
        "UPDATE provider_keys SET ciphertext = 'gAAAA-other-ciphertext', last4 = '9876'"
    )
    await db.execute("UPDATE tenants SET token_sha256 = $1, token_rotated_at = now()", b"\x01" * 32)
    await db.execute("DELETE FROM provider_keys")
    dumped = json.dumps(
        [dict(row) for row in await db.fetch("SELECT before, after FROM audit_events")]
    )
    assert "ciphertext" not in dumped and "token_sha256" not in dumped
    actions = [row["action"] for row in await _rows(db, "provider_key")]
    assert actions == ["provider_key.added", "provider_key.replaced", "provider_key.removed"]
    [_, rotated] = await _rows(db, "tenant")
    assert rotated["action"] == "tenant.token_rotated"


async def test_the_trail_refuses_update_delete_and_truncate(db) -> None:
    await audit.record_action(
        db, actor="worker", action="x.y", subject_kind="x", subject_id="1", cause="test"
    )
    assert await audit.seal(db) == 1
    for statement in (
        "UPDATE audit_events SET actor = 'someone'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "DELETE FROM audit_seals",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await db.execute(statement)
    # A writer cannot backdate a row either: the trigger stamps its time and transaction.
    await db.execute(
        "INSERT INTO audit_events (actor, action, subject_kind, subject_id, cause, recorded_at,"
        " xact) VALUES ('a', 'b', 'c', 'd', 'e', '2001-01-01', '1')"
    )
    assert await db.fetchval("SELECT min(recorded_at) > '2020-01-01' FROM audit_events")
    assert await db.fetchval("SELECT min(xact::text::bigint) > 1 FROM audit_events")


async def test_a_cli_revoke_records_the_operator(db, settings, smtp, tmp_path) -> None:
    settings = license_settings(settings, smtp, tmp_path)
    payment_id = await insert_payment(db)
    await deliver_inline(settings, payment_id, smtp)
    license_id = await db.fetchval("SELECT id FROM licenses")
    result = await run_cli(settings, ["license", "revoke", str(license_id), "--reason", "fraud"])
    assert result.exit_code == 0, result.output
    result = await run_cli(settings, ["license", "resend", str(uuid.uuid4())])
    assert result.exit_code == 1
    [_, revoked] = await _rows(db, "license")
    assert revoked["action"] == "license.revoked"
    assert revoked["actor"] == f"operator:cli:{getpass.getuser()}"
    assert revoked["cause"] == "cli:license revoke"
    assert revoked["before"] == {"revoked_at": None, "revoked_reason": None}
    assert revoked["after"]["revoked_reason"] == "fraud"

    listed = await run_cli(settings, ["audit", "list", "--subject", f"license:{license_id}"])
    assert listed.exit_code == 0
    assert "license.revoked" in listed.output and "license.issued" in listed.output


async def _break_rows(db: asyncpg.Connection, *statements: str) -> None:
    """Tamper as a superuser would, with the append-only triggers out of the way."""
    await db.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
    await db.execute("ALTER TABLE audit_seals DISABLE TRIGGER audit_seals_append_only")
    for statement in statements:
        await db.execute(statement)
    await db.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")
    await db.execute("ALTER TABLE audit_seals ENABLE TRIGGER audit_seals_append_only")


async def _ten_rows(db: asyncpg.Connection) -> list[int]:
    for n in range(10):
        await audit.record_action(
            db,
            actor="operator:cli:test",
            action="deadletter.requeue",
            subject_kind="dead_letter",
            subject_id=f"m{n}",
            after={"n": n},
            cause="cli:dlq requeue",
        )
    assert await audit.seal(db, batch=3) == 10
    return [
        row["id"]
        for row in await db.fetch(
            "SELECT id FROM audit_events WHERE action = 'deadletter.requeue' ORDER BY id"
        )
    ]


async def test_verify_lists_each_broken_row_and_exits_1(db, settings) -> None:
    ids = await _ten_rows(db)
    result = await run_cli(settings, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert "audit chain intact: 10 row(s) sealed" in result.output
    head = result.output.split("head ")[1].strip()

    altered, deleted = ids[3], ids[6]
    await _break_rows(
        db,
        f"UPDATE audit_events SET after = '{{\"n\": 99}}' WHERE id = {altered}",
        f"DELETE FROM audit_events WHERE id = {deleted}",
    )
    result = await run_cli(settings, ["audit", "verify"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith("altered") and f"seq 4, row {altered}" in lines[0]
    assert lines[1].startswith("missing") and f"seq 7, row {deleted}" in lines[1]
    assert lines[-1].startswith("audit chain BROKEN: 2 finding(s) in 10 sealed row(s)")
    # The rows between and after the breaks are not blamed.
    assert len(lines) == 3
    # Verify's head still matches (nothing was rebuilt), so --head alone adds no finding.
    result = await run_cli(settings, ["audit", "verify", "--head", head])
    assert "rebuilt" not in result.output


async def test_verify_finds_links_deleted_moved_or_rows_inserted_behind_the_seal(db) -> None:
    ids = await _ten_rows(db)
    await _break_rows(
        db,
        "DELETE FROM audit_seals WHERE seq = 2",
        # seq 5 and 6 swap places.
        "UPDATE audit_seals SET seq = 1000 WHERE seq = 5",
        "UPDATE audit_seals SET seq = 5 WHERE seq = 6",
        "UPDATE audit_seals SET seq = 6 WHERE seq = 1000",
    )
    await db.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_stamp")
    await db.execute(
        "INSERT INTO audit_events (actor, action, subject_kind, subject_id, cause, recorded_at,"
        " xact) VALUES ('a', 'b', 'c', 'd', 'e', now(), '3')"
    )
    await db.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_events_stamp")
    verdict = await audit.verify_chain(db, seal_first=False)
    found = [(b.kind.value, b.seq, b.event_id) for b in verdict.breaks]
    assert found[0] == ("missing_links", 2, None)
    assert ("out_of_order", 5, ids[5]) in found and ("out_of_order", 6, ids[4]) in found
    assert found[-1][0] == "unsealed_behind"
    assert not verdict.ok and verdict.checked == 9
    moved = next(b for b in verdict.breaks if b.seq == 5)
    assert "sealed after link 6" in moved.detail


async def test_verify_reports_unsealed_rows_apart_and_sealing_is_incremental(db) -> None:
    await _ten_rows(db)
    await audit.record_action(
        db, actor="worker", action="x.y", subject_kind="x", subject_id="1", cause="t"
    )
    verdict = await audit.verify_chain(db, seal_first=False)
    assert (verdict.ok, verdict.checked, verdict.unsealed) == (True, 10, 1)
    assert await audit.seal(db, batch=3) == 1
    assert await audit.seal(db) == 0
    verdict = await audit.verify_chain(db)
    assert (verdict.ok, verdict.checked, verdict.unsealed) == (True, 11, 0)


async def test_a_rebuilt_chain_is_caught_by_a_head_noted_before(db, settings) -> None:
    await _ten_rows(db)
    result = await run_cli(settings, ["audit", "verify"])
    head = result.output.split("head ")[1].strip()
    # Rebuild from seq 5 on: delete the tail links, alter a row, re-seal. The chain itself then
    # holds; only the head noted earlier shows it was rewritten.
    await _break_rows(
        db,
        "DELETE FROM audit_seals WHERE seq >= 5",
        "UPDATE audit_events SET cause = 'forged' WHERE id = (SELECT max(id) FROM audit_events)",
    )
    assert await audit.seal(db) == 6
    result = await run_cli(settings, ["audit", "verify", "--head", head])
    assert result.exit_code == 1
    assert f"head {head} is no longer in the chain" in result.output


async def test_operator_commands_record_who_ran_them(db, settings) -> None:
    operator = f"operator:cli:{getpass.getuser()}"
    created = await run_cli(settings, ["tenants", "create", "--email", "a@x.com", "--id", "acme"])
    assert created.exit_code == 0, created.output
    assert (await run_cli(settings, ["tenants", "token", "rotate", "acme"])).exit_code == 0
    assert (await run_cli(settings, ["bots", "reset", "acme"])).exit_code == 0
    added = await run_cli(
        settings, ["catalog", "add", "pro-plan", "--name", "Pro", "--plan", "pro"]
    )
    assert added.exit_code == 0, added.output
    priced = await run_cli(
        settings, ["catalog", "price", "pro-plan", "199.00", "MXN", "--period", "month"]
    )
    assert priced.exit_code == 0, priced.output
    rows = await db.fetch(
        "SELECT actor, action, subject_kind, subject_id, cause FROM audit_events ORDER BY id"
    )
    assert [(r["action"], r["subject_id"], r["cause"]) for r in rows] == [
        ("tenant.created", "acme", "cli:tenants create"),
        ("tenant.token_rotated", "acme", "cli:tenants token rotate"),
        ("bot.reset", "acme", "cli:bots reset"),
        ("product.created", "pro-plan", "cli:catalog add"),
        ("price.created", rows[4]["subject_id"], "cli:catalog price"),
    ]
    assert {r["actor"] for r in rows} == {operator}


async def test_a_rate_accepted_by_an_operator_is_in_the_trail(db, settings) -> None:
    rate_id = await db.fetchval(
        "INSERT INTO rates (source, pair, value, effective_date, status, reason)"
        " VALUES ('bcv', 'USD/VES', 36.5, current_date, 'suspect', 'jumped 30%') RETURNING id"
    )
    result = await run_cli(settings, ["rates", "accept", str(rate_id)])
    assert result.exit_code == 0, result.output
    [row] = await _rows(db, "rate")
    assert row["action"] == "rate.confirmed"
    assert (row["actor"], row["cause"]) == (f"operator:cli:{getpass.getuser()}", "cli:rates accept")
    assert (row["before"]["status"], row["after"]["status"]) == ("suspect", "confirmed")
    assert row["after"]["decided_by"] == "operator"


_ROW = {
    "id": 7,
    "recorded_at": "2026-01-01T12:00Z",
    "actor": "a",
    "action": "b",
    "subject_kind": "c",
    "subject_id": "d",
    "before": None,
    "after": '{"total": 0.10000000000000000001, "n": [1, "ñ"]}',
    "cause": "e",
}


async def _canonical(db: asyncpg.Connection, **changes: object) -> bytes:
    """The canonical bytes the database gives an audit row with these values."""
    return await db.fetchval(
        f"SELECT {audit.CANONICAL} FROM (SELECT $1::bigint AS id,"
        " $2::text::timestamptz AS recorded_at, $3::text AS actor, $4::text AS action,"
        " $5::text AS subject_kind, $6::text AS subject_id, $7::text::jsonb AS before,"
        " $8::text::jsonb AS after, $9::text AS cause) e",
        *{**_ROW, **changes}.values(),
    )


async def test_a_rows_canonical_bytes_are_one_text_whatever_its_spelling_or_session(db) -> None:
    plain = await _canonical(db)
    assert (
        await _canonical(db, after='{ "n":[1,"\\u00f1"],\n  "total":0.10000000000000000001 }')
        == plain
    )
    # Exact decimals: a change in the 20th digit is a change.
    assert await _canonical(db, after='{"total": 0.1, "n": [1, "ñ"]}') != plain
    # One instant, whatever zone it was written in or the session prints times in.
    await db.execute("SET TIME ZONE 'America/Mexico_City'")
    assert await _canonical(db, recorded_at="2026-01-01T06:00-06:00") == plain
    assert await _canonical(db, recorded_at="2026-01-01T12:00:00.000001Z") != plain
    assert await _canonical(db, after=None) != await _canonical(db, after="{}")


async def test_every_field_is_in_the_canonical_bytes_unambiguously(db) -> None:
    plain = await _canonical(db)
    for name in ("actor", "action", "subject_kind", "subject_id", "cause"):
        assert await _canonical(db, **{name: _ROW[name] + "x"}) != plain, name
    assert await _canonical(db, id=8) != plain
    assert await _canonical(db, before="{}") != plain
    # A character moved from one field to the next is another row.
    assert await _canonical(db, actor="ab", action="") != await _canonical(
        db, actor="a", action="b"
    )


async def _links_in_memory(db: asyncpg.Connection) -> list[Link]:
    rows = await db.fetch(
        "SELECT s.seq, s.event_id, s.prev_hash, s.hash,"
        f" CASE WHEN e.id IS NOT NULL THEN {audit.CANONICAL} END AS canonical"
        " FROM audit_seals s LEFT JOIN audit_events e ON e.id = s.event_id ORDER BY s.seq"
    )
    return [
        Link(r["seq"], r["event_id"], bytes(r["prev_hash"]), bytes(r["hash"]), r["canonical"])
        for r in rows
    ]


@pytest.mark.parametrize("chunk", [3, audit.VERIFY_BATCH])
async def test_the_check_in_the_database_agrees_with_the_rules_across_chunks(
    db, monkeypatch, chunk: int
) -> None:
    monkeypatch.setattr(audit, "VERIFY_BATCH", chunk)
    ids = await _ten_rows(db)
    intact = await audit.verify_chain(db, seal_first=False)
    assert (intact.ok, intact.checked, intact.head_seq) == (True, 10, 10)
    assert intact.head_hash == (await audit.head(db))[1]
    # Breaks on both sides of the chunk boundaries (3, 6, 9): seq 3 altered, seq 4 and 5 gone
    # (a gap across a boundary), seq 7 and 10 swapped, seq 9's row deleted.
    await _break_rows(
        db,
        f"UPDATE audit_events SET cause = 'forged' WHERE id = {ids[2]}",
        "DELETE FROM audit_seals WHERE seq IN (4, 5)",
        "UPDATE audit_seals SET seq = 1000 WHERE seq = 7",
        "UPDATE audit_seals SET seq = 7 WHERE seq = 10",
        "UPDATE audit_seals SET seq = 10 WHERE seq = 1000",
        f"DELETE FROM audit_events WHERE id = {ids[8]}",
    )
    verdict = await audit.verify_chain(db, seal_first=False)
    expected = find_breaks(await _links_in_memory(db))
    assert [(b.kind, b.seq, b.event_id) for b in verdict.breaks] == [
        (b.kind, b.seq, b.event_id) for b in expected
    ]
    assert [(b.kind.value, b.seq) for b in expected] == [
        ("altered", 3),
        ("missing_links", 4),
        ("out_of_order", 7),
        ("out_of_order", 8),
        ("missing", 9),
        ("out_of_order", 10),
    ]
    assert (verdict.checked, verdict.head_seq) == (8, 10)


async def test_a_row_committed_behind_a_running_seal_is_sealed_by_the_next_run(
    db, database_url
) -> None:
    other = await asyncpg.connect(database_url)
    try:
        running = other.transaction()
        await running.start()
        # The oldest transaction and the lowest id: the run passes over it, still invisible...
        await audit.record_action(
            other, actor="w", action="x.late", subject_kind="x", subject_id="0", cause="t"
        )
        for n in range(7):
            await audit.record_action(
                db, actor="w", action="x.y", subject_kind="x", subject_id=str(n), cause="t"
            )
        run = audit._SealRun()
        assert await audit._seal_batch(db, run, 3) == (3, True)
        # ... and it commits while the run goes on: the run ends with no transaction running.
        await running.commit()
    finally:
        await other.close()
    while (await audit._seal_batch(db, run, 3))[1]:
        pass
    # Not behind the seal: the horizon stored is the one the run began with, not the newer one
    # it ended with.
    verdict = await audit.verify_chain(db, seal_first=False)
    assert (verdict.ok, verdict.checked, verdict.unsealed) == (True, 7, 1)
    assert await audit.seal(db, batch=3) == 1
    verdict = await audit.verify_chain(db, seal_first=False)
    assert (verdict.ok, verdict.checked, verdict.unsealed) == (True, 8, 0)


async def test_verify_shows_progress_on_stderr_only_when_asked(db, settings) -> None:
    await _ten_rows(db)
    quiet = await run_cli(settings, ["audit", "verify"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    shown = await run_cli(settings, ["audit", "verify", "--progress"])
    assert shown.exit_code == 0, shown.output
    assert shown.stderr.splitlines()[-1] == "checking: 10 of 10 link(s) (100%)"
    assert "audit chain intact: 10 row(s) sealed" in shown.stdout


async def test_after_a_restore_into_another_cluster_the_new_rows_are_still_sealed(db) -> None:
    await _ten_rows(db)
    # Another cluster's transaction ids: the restored seal's horizon is ahead of this one's.
    await _break_rows(db, "UPDATE audit_seals SET horizon = '900000000000' WHERE seq = 10")
    await audit.record_action(
        db, actor="w", action="x.y", subject_kind="x", subject_id="1", cause="t"
    )
    verdict = await audit.verify_chain(db, seal_first=False)
    assert (verdict.ok, verdict.checked, verdict.unsealed) == (True, 10, 1)
    assert await audit.seal(db, batch=3) == 1
    verdict = await audit.verify_chain(db)
    assert (verdict.ok, verdict.checked, verdict.unsealed) == (True, 11, 0)
