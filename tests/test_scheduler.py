"""The scheduler: the relay job republishes, and the advisory lock keeps ticks exclusive."""

from __future__ import annotations

import asyncio

from apscheduler.triggers.interval import IntervalTrigger

from colmena.runtime.publisher import AmqpPublisher
from colmena.runtime.resources import Resources
from colmena.runtime.scheduler import ScheduledJob, build_scheduler, run_exclusively
from colmena.store import outbox
from tests.conftest import queue_counts, wait_for


async def test_relay_job_publishes_what_was_left_behind(settings, db) -> None:
    async with db.transaction():
        await outbox.record(db, queue="payments", actor="noop", args=[1])
    resources = Resources(
        settings.model_copy(update={"relay_interval_s": 0.2}),
        database_url=settings.require_database_url(),
        publisher=AmqpPublisher(settings.require_broker_url(), settings.queue_prefix),
    )
    await resources.start()
    scheduler = build_scheduler(resources, [])
    scheduler.start()
    try:
        await wait_for(
            lambda: db.fetchval("SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL")
        )
    finally:
        scheduler.shutdown(wait=False)
        await resources.close()
    assert queue_counts(settings.queue_prefix + "payments")[0] == 1


async def test_a_job_never_runs_twice_at_once(settings) -> None:
    running = 0
    overlaps = 0
    runs = 0

    async def slow(_resources: Resources) -> None:
        nonlocal running, overlaps, runs
        running += 1
        overlaps += running > 1
        await asyncio.sleep(0.2)
        running -= 1
        runs += 1

    job = ScheduledJob("test-slow", IntervalTrigger(seconds=60), slow)
    first, second = (
        Resources(
            settings,
            database_url=settings.require_database_url(),
            publisher=AmqpPublisher("amqp://x@127.0.0.1:1/", ""),
        )
        for _ in range(2)
    )
    try:
        await asyncio.gather(run_exclusively(first, job), run_exclusively(second, job))
    finally:
        await first.close()
        await second.close()
    assert overlaps == 0
    assert runs == 1
