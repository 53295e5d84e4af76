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
    """The second scheduler's tick comes while the first one's is still running (it holds the
    job until released), so the advisory lock is what makes it skip."""
    started, release = asyncio.Event(), asyncio.Event()
    runs = 0

    async def held(_resources: Resources) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:  # the first tick holds the job until the test releases it
            started.set()
            await release.wait()

    job = ScheduledJob("test-held", IntervalTrigger(seconds=60), held)
    first, second = (
        Resources(
            settings,
            database_url=settings.require_database_url(),
            publisher=AmqpPublisher("amqp://x@127.0.0.1:1/", ""),
        )
        for _ in range(2)
    )
    try:
        running = asyncio.create_task(run_exclusively(first, job))
        await asyncio.wait_for(started.wait(), timeout=20)
        await asyncio.wait_for(run_exclusively(second, job), timeout=20)
        assert runs == 1, "the second tick ran while the first held the lock"
        release.set()
        await asyncio.wait_for(running, timeout=20)
        await asyncio.wait_for(run_exclusively(second, job), timeout=20)
        assert runs == 2, "once the first tick ended, the next one ran"
    finally:
        release.set()
        await first.close()
        await second.close()
