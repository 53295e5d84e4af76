"""Group commit of webhooks (`colmena.http.webhooks.InboxWriter`): events that arrive together
are committed in one statement, and each request still learns only its own event's fate."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest
from pydantic import SecretStr

from bench.standins.tcp_proxy import TcpProxy
from colmena.gateways import sample_events as events
from colmena.http.webhooks import DATABASE_DOWN, ENOUGH, InboxWriter
from colmena.runtime.publisher import LeaveToRelay
from colmena.runtime.resources import Resources
from colmena.store.inbox import ArrivedEvent
from colmena.store.outbox import message_from_row
from tests.payments_support import STRIPE_SECRET, stored_counts, stripe_post_args


@pytest.fixture
async def resources(settings) -> AsyncIterator[Resources]:
    held = Resources(
        settings, database_url=settings.require_database_url(), publisher=LeaveToRelay()
    )
    await held.start()
    yield held
    await held.close()


class Submitted(list):
    """Stands in for the after-commit publisher: keeps what each submit handed on."""

    def submit(self, rows):
        self.append([row for row in rows if row is not None])


@pytest.fixture
def submitted() -> Submitted:
    return Submitted()


def arrived(*, event_key: str | None = None, document: str | None = None) -> ArrivedEvent:
    return ArrivedEvent(
        provider="stripe",
        event_key=event_key or f"evt_{uuid.uuid4().hex}",
        kind="payment_intent.succeeded",
        document=document or json.dumps({"object": "event"}),
        queue="payments",
        actor="settle_stripe_event",
    )


def soon() -> float:
    """A deadline (loop time) no healthy commit misses."""
    return asyncio.get_running_loop().time() + 5.0


async def commits(db, table: str) -> int:
    """How many transactions wrote the table's rows (a row's xmin is the one that inserted it)."""
    return await db.fetchval(f"SELECT count(DISTINCT xmin::text) FROM {table}")


async def test_events_arriving_together_are_committed_in_one_statement(
    resources, submitted, db
) -> None:
    writer = InboxWriter(resources, submitted, wait_s=0)

    results = await asyncio.gather(*(writer.record(arrived(), soon()) for _ in range(20)))

    assert results == [True] * 20
    assert await stored_counts(db) == (20, 20, 0)
    assert await commits(db, "inbox") == 1 and await commits(db, "outbox") == 1
    [messages] = submitted  # handed to the publisher together, once committed
    stored = await db.fetch("SELECT id, message_id, queue, actor, args, kwargs FROM outbox")
    assert {row["id"]: message_from_row(row) for row in stored} == {
        message.id: message for message in messages
    }


async def test_an_event_arriving_while_the_batch_gathers_joins_it(resources, submitted, db) -> None:
    writer = InboxWriter(resources, submitted, wait_s=0.2)
    first = asyncio.create_task(writer.record(arrived(), soon()))
    # Two turns of the loop: the first event is queued and its writer started, then the writer
    # runs (with no wait, it would now be committing the first event alone).
    for _ in range(2):
        await asyncio.sleep(0)

    results = await asyncio.gather(first, writer.record(arrived(), soon()))

    assert results == [True, True]
    assert await commits(db, "inbox") == 1
    assert [len(messages) for messages in submitted] == [2]


async def test_enough_events_queued_end_the_wait(resources, submitted, db) -> None:
    writer = InboxWriter(resources, submitted, wait_s=600)  # a wait no test sits out
    first = asyncio.create_task(writer.record(arrived(), soon()))
    for _ in range(2):  # the writer is now waiting for more
        await asyncio.sleep(0)

    async with asyncio.timeout(30):
        results = await asyncio.gather(
            first, *(writer.record(arrived(), soon()) for _ in range(ENOUGH - 1))
        )

    assert results == [True] * ENOUGH
    assert await commits(db, "inbox") == 1


async def test_a_carried_event_s_message_carries_its_document_and_the_stored_one_does_not(
    resources, submitted, db
) -> None:
    writer = InboxWriter(resources, submitted, wait_s=0)
    document = json.dumps({"object": "event", "id": "evt_carried"})
    carried = arrived(document=document)._replace(carried=True)

    assert await asyncio.gather(writer.record(carried, soon()), writer.record(arrived(), soon()))

    [[with_document, plain]] = submitted
    assert with_document.kwargs["document"] == document
    drawn = with_document.kwargs["payment_id"]
    assert isinstance(drawn, int)
    assert await db.fetchval("SELECT last_value FROM payments_id_seq") == drawn
    assert plain.kwargs == {}
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE kwargs <> '{}'") == 0
    digest = await db.fetchval(
        "SELECT document_sha256 FROM inbox WHERE event_key = $1", carried.event_key
    )
    assert digest == hashlib.sha256(document.encode()).digest()


async def test_duplicates_in_one_batch_make_one_row_and_one_message(
    resources, submitted, db
) -> None:
    writer = InboxWriter(resources, submitted, wait_s=0)
    twice = arrived()

    results = await asyncio.gather(
        writer.record(twice, soon()), writer.record(arrived(), soon()), writer.record(twice, soon())
    )

    assert results == [True, True, False]
    assert [len(messages) for messages in submitted] == [2]
    assert await stored_counts(db) == (2, 2, 0)
    assert await commits(db, "inbox") == 1


async def test_an_event_jsonb_cannot_hold_fails_alone(resources, submitted, db) -> None:
    writer = InboxWriter(resources, submitted, wait_s=0)
    unstorable = arrived(document='{"amount": NaN}')

    results = await asyncio.gather(
        writer.record(arrived(), soon()),
        writer.record(unstorable, soon()),
        writer.record(arrived(), soon()),
        return_exceptions=True,
    )

    assert results[0] is True and results[2] is True
    assert isinstance(results[1], asyncpg.DataError)
    assert await stored_counts(db) == (2, 2, 0)


async def test_an_event_whose_deadline_passed_while_it_waited_is_not_written(
    resources, submitted, db
) -> None:
    writer = InboxWriter(resources, submitted, wait_s=0)
    late = asyncio.get_running_loop().time()

    results = await asyncio.gather(
        writer.record(arrived(), soon()), writer.record(arrived(), late), return_exceptions=True
    )

    assert results[0] is True and isinstance(results[1], TimeoutError)
    assert await stored_counts(db) == (1, 1, 0)


async def test_every_event_of_a_batch_sees_the_database_down(settings, database_url) -> None:
    target = urlsplit(database_url)
    proxy = TcpProxy(target.hostname, target.port)
    port = await proxy.start()
    proxied = database_url.replace(f":{target.port}/", f":{port}/")
    held = Resources(settings, database_url=proxied, publisher=LeaveToRelay())
    await held.start()
    writer = InboxWriter(held, Submitted(), wait_s=0)
    try:
        await proxy.cut()
        results = await asyncio.gather(
            *(writer.record(arrived(), soon()) for _ in range(3)), return_exceptions=True
        )
    finally:
        await proxy.restore()
        await held.close()

    assert all(isinstance(result, DATABASE_DOWN) for result in results), results


async def test_concurrent_webhooks_each_get_their_own_answer(make_client, settings, db) -> None:
    client = await make_client(
        settings.model_copy(update={"stripe_webhook_secrets": SecretStr(STRIPE_SECRET)})
    )
    good = [
        events.stripe_event("payment_intent.succeeded", events.payment_intent()) for _ in range(8)
    ]
    bad = events.stripe_event("payment_intent.succeeded", events.payment_intent())
    bad["livemode"] = float("inf")  # json.dumps writes Infinity, which jsonb refuses

    responses = await asyncio.gather(
        *(client.post("/webhooks/stripe", **stripe_post_args(event)) for event in [*good, bad])
    )

    assert [response.status for response in responses] == [200] * 8 + [400]
    assert (await responses[-1].json())["error"]["code"] == "malformed"
    assert await stored_counts(db) == (8, 8, 0)
    stored = {row["event_key"] for row in await db.fetch("SELECT event_key FROM inbox")}
    assert stored == {event["id"] for event in good}
