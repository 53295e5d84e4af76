"""A payment's first event settles in one statement, after its read or at once when its message
carried it; every other event, a first one that loses a race, and a carried one whose document
is not the stored one, the locked way. Both ways leave the same rows, on a real database, with
deliveries racing one another."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from colmena.actors.payments import carried_stripe_event, settle
from colmena.domain.payment_events import interpret_stripe
from colmena.gateways import sample_events as events
from colmena.store import inbox
from colmena.store.outbox import OutboxMessage
from colmena.store.pool import create_pool
from tests.payments_support import LICENSE_METADATA

DELIVERIES = 8


def statements_sent() -> float:
    return REGISTRY.get_sample_value("colmena_db_statements_total") or 0.0


def altered_events() -> float:
    """Security events counted for a message that carried another event than the stored one."""
    return (
        REGISTRY.get_sample_value(
            "colmena_security_events_total", {"reason": "carried_event_altered"}
        )
        or 0.0
    )


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=DELIVERIES)
    yield pool
    await pool.close()


async def _stored(db: asyncpg.Connection, event: dict[str, Any]) -> int:
    inbox_id, _ = await inbox.record_event(
        db, provider="stripe", event_key=event["id"], kind=event["type"], payload=event
    )
    return inbox_id


async def _settle(pool: asyncpg.Pool, inbox_id: int) -> list[OutboxMessage]:
    return await settle(pool, inbox_id, lambda stored: interpret_stripe(stored.payload))


async def _outcome(db: asyncpg.Connection, inbox_id: int) -> str | None:
    """The event's outcome, once processed."""
    return await db.fetchval(
        "SELECT outcome FROM inbox WHERE id = $1 AND processed_at IS NOT NULL", inbox_id
    )


def _succeeded(intent_id: str) -> dict[str, Any]:
    return events.stripe_event(
        "payment_intent.succeeded",
        events.payment_intent(payment_intent_id=intent_id, metadata=LICENSE_METADATA),
    )


async def test_a_first_event_settles_in_two_statements_with_its_follow_ups(pool, db) -> None:
    inbox_id = await _stored(db, _succeeded("pi_first"))

    before = statements_sent()
    rows = await _settle(pool, inbox_id)
    assert statements_sent() - before == 2  # read the event, create the payment settled

    payment = await db.fetchrow(
        "SELECT id, status, approved_at, amount_minor, product_kind, metadata FROM payments"
    )
    assert (payment["status"], payment["amount_minor"], payment["product_kind"]) == (
        "approved",
        150_000,
        "license",
    )
    assert payment["approved_at"] is not None
    assert payment["metadata"]["rfc"] == LICENSE_METADATA["rfc"]
    reported = await db.fetch("SELECT payment_id, inbox_id, status, applied FROM payment_events")
    assert [tuple(row) for row in reported] == [(payment["id"], inbox_id, "approved", True)]
    assert await _outcome(db, inbox_id) == "applied: approved"
    outbox = await db.fetch("SELECT id, actor, args, dedupe_key FROM outbox ORDER BY id")
    assert [(row["actor"], row["args"], row["dedupe_key"]) for row in outbox] == [
        ("deliver_license", [payment["id"]], f"deliver_license:{payment['id']}"),
        ("stamp_invoice", [payment["id"]], f"stamp_invoice:{payment['id']}"),
    ]
    assert [(row.id, row.actor, row.args) for row in rows] == [
        (row["id"], row["actor"], row["args"]) for row in outbox
    ]

    before = statements_sent()
    assert await _settle(pool, inbox_id) == []
    assert statements_sent() - before == 1  # the read finds it processed


async def test_a_later_event_of_the_payment_goes_the_locked_way_and_writes_it_once(
    pool, db
) -> None:
    await _settle(pool, await _stored(db, _succeeded("pi_twice")))
    again = await _stored(db, _succeeded("pi_twice"))  # the same status, another event id

    before = statements_sent()
    assert await _settle(pool, again) == []
    # The read, the attempt that finds the payment, then BEGIN, lock the event, lock the
    # payment, write, COMMIT.
    assert statements_sent() - before == 7

    assert await db.fetchval("SELECT count(*) FROM payments") == 1
    reported = await db.fetch(
        "SELECT inbox_id, applied, reason FROM payment_events ORDER BY id OFFSET 1"
    )
    assert [tuple(row) for row in reported] == [(again, False, "no change")]
    assert await db.fetchval("SELECT count(*) FROM outbox") == 2
    assert await _outcome(db, again) == "ignored: no change"


async def test_racing_deliveries_of_one_event_settle_it_once(pool, db) -> None:
    inbox_id = await _stored(db, _succeeded("pi_race"))

    results = await asyncio.gather(*(_settle(pool, inbox_id) for _ in range(DELIVERIES)))

    assert sorted(len(rows) for rows in results) == [0] * (DELIVERIES - 1) + [2]
    assert await db.fetchval("SELECT count(*) FROM payments") == 1
    assert await db.fetchval("SELECT count(*) FROM payment_events") == 1
    assert await db.fetchval("SELECT count(*) FROM outbox") == 2


async def test_racing_first_events_of_one_payment_create_it_once(pool, db) -> None:
    inbox_ids = [await _stored(db, _succeeded("pi_both")) for _ in range(DELIVERIES)]

    results = await asyncio.gather(*(_settle(pool, inbox_id) for inbox_id in inbox_ids))

    assert sum(len(rows) for rows in results) == 2  # one event's follow-ups
    assert await db.fetchval("SELECT count(*) FROM payments") == 1
    reported = await db.fetch("SELECT applied, reason FROM payment_events ORDER BY applied DESC")
    unchanged = [(False, "no change")] * (DELIVERIES - 1)
    assert [(row["applied"], row["reason"]) for row in reported] == [(True, None), *unchanged]
    assert [await _outcome(db, inbox_id) is not None for inbox_id in inbox_ids] == [
        True
    ] * DELIVERIES
    assert await db.fetchval("SELECT count(*) FROM outbox") == 2


async def _carried(db: asyncpg.Connection, event: dict[str, Any]) -> OutboxMessage:
    """The event stored as the ingress stores it, and the message it publishes at once."""
    [(new, message)] = await inbox.record_with_messages(
        db,
        [
            inbox.ArrivedEvent(
                "stripe",
                event["id"],
                event["type"],
                json.dumps(event),
                "payments",
                "settle_stripe_event",
                carried=True,
            )
        ],
    )
    assert new and message is not None
    return message


async def test_a_carried_first_event_settles_in_one_statement(pool, db) -> None:
    message = await _carried(db, _succeeded("pi_carried"))
    [inbox_id] = message.args
    carried = carried_stripe_event(inbox_id, **message.kwargs)

    before = statements_sent()
    rows = await settle(
        pool, inbox_id, lambda stored: interpret_stripe(stored.payload), carried=carried
    )
    assert statements_sent() - before == 1

    payment_id = message.kwargs["payment_id"]
    assert await db.fetchval("SELECT id FROM payments") == payment_id
    assert [(row.actor, row.args) for row in rows] == [
        ("deliver_license", [payment_id]),
        ("stamp_invoice", [payment_id]),
    ]
    assert await _outcome(db, inbox_id) == "applied: approved"


async def test_a_carried_document_that_is_not_the_stored_one_settles_nothing_of_its_own(
    pool, db
) -> None:
    stored = _succeeded("pi_stored")
    message = await _carried(db, stored)
    [inbox_id] = message.args
    forged = json.loads(message.kwargs["document"])
    forged["data"]["object"]["amount"] = 1  # a message nobody verified, naming the real event
    carried = carried_stripe_event(inbox_id, json.dumps(forged), message.kwargs["payment_id"])
    altered_before = altered_events()

    before = statements_sent()
    await settle(pool, inbox_id, lambda stored: interpret_stripe(stored.payload), carried=carried)
    # The carried attempt writes nothing; the stored event is read, then settled.
    assert statements_sent() - before == 3
    assert altered_events() == altered_before + 1

    assert await db.fetchval("SELECT amount_minor FROM payments") == 150_000
    assert await db.fetchval("SELECT count(*) FROM payments") == 1
    assert await _outcome(db, inbox_id) == "applied: approved"


async def test_a_carried_event_of_a_known_payment_goes_the_locked_way(pool, db) -> None:
    await _settle(pool, await _stored(db, _succeeded("pi_known")))
    message = await _carried(db, _succeeded("pi_known"))
    [inbox_id] = message.args
    carried = carried_stripe_event(inbox_id, **message.kwargs)
    altered_before = altered_events()

    before = statements_sent()
    assert (
        await settle(pool, inbox_id, lambda e: interpret_stripe(e.payload), carried=carried) == []
    )
    # The carried attempt, the read, then BEGIN, lock the event, lock the payment, write, COMMIT.
    assert statements_sent() - before == 7

    assert altered_events() == altered_before  # the message carried the stored event
    assert await db.fetchval("SELECT count(*) FROM payments") == 1
    assert await _outcome(db, inbox_id) == "ignored: no change"


def test_a_carried_document_that_is_not_an_event_is_left_to_the_stored_one() -> None:
    assert carried_stripe_event(1, "not json", 7) is None
    assert carried_stripe_event(1, "[1, 2]", 7) is None
    assert carried_stripe_event(1, None, 7) is None
    assert carried_stripe_event(1, "{}", None) is None
