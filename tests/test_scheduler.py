"""The scheduler: the relay job republishes, and advisory locks keep each job to one scheduler."""

from __future__ import annotations

import asyncio

from apscheduler.triggers.interval import IntervalTrigger

from colmena.runtime.publisher import AmqpPublisher
from colmena.runtime.resources import Resources
from colmena.runtime.scheduler import JobLocks, ScheduledJob, build_scheduler, run_exclusively
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
    locks = JobLocks(resources.database_url)
    scheduler = build_scheduler(resources, locks, [])
    scheduler.start()
    try:
        await wait_for(
            lambda: db.fetchval("SELECT count(*) = 0 FROM outbox WHERE published_at IS NULL")
        )
    finally:
        scheduler.shutdown(wait=False)
        await locks.close()
        await resources.close()
    assert queue_counts(settings.queue_prefix + "payments")[0] == 1


async def test_a_job_runs_in_one_scheduler_until_it_is_gone(settings) -> None:
    """The second scheduler's tick comes while the first one's is still running (it holds the
    job until released), and again after it ended: both times the first scheduler owns the job.
    Once the first scheduler is gone, the second takes the job over."""
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
    first_locks, second_locks = (JobLocks(settings.require_database_url()) for _ in range(2))
    try:
        running = asyncio.create_task(run_exclusively(first, first_locks, job))
        await asyncio.wait_for(started.wait(), timeout=20)
        await asyncio.wait_for(run_exclusively(second, second_locks, job), timeout=20)
        assert runs == 1, "the second scheduler ran a tick while the first ran the job"
        release.set()
        await asyncio.wait_for(running, timeout=20)
        await asyncio.wait_for(run_exclusively(second, second_locks, job), timeout=20)
        assert runs == 1, "the second scheduler ran a job the first still owns"
        await asyncio.wait_for(run_exclusively(first, first_locks, job), timeout=20)
        assert runs == 2, "the owner's next tick ran"

        await first_locks.close()  # the first scheduler stops
        await asyncio.wait_for(run_exclusively(second, second_locks, job), timeout=20)
        assert runs == 3, "the second scheduler took the job over"
    finally:
        release.set()
        await first_locks.close()
        await second_locks.close()
        await first.close()
        await second.close()


async def test_a_tick_cancelled_by_a_stop_ends_quietly(settings) -> None:
    """Ctrl-C or SIGTERM cancels a tick in flight: the tick's task ends without an exception
    (APScheduler would print a traceback for one), and the next tick runs the job again."""
    started = asyncio.Event()
    runs = 0

    async def blocked(_resources: Resources) -> None:
        nonlocal runs
        runs += 1
        started.set()
        await asyncio.Event().wait()

    job = ScheduledJob("test-blocked", IntervalTrigger(seconds=60), blocked)
    resources = Resources(
        settings,
        database_url=settings.require_database_url(),
        publisher=AmqpPublisher("amqp://x@127.0.0.1:1/", ""),
    )
    locks = JobLocks(settings.require_database_url())
    try:
        tick = asyncio.create_task(run_exclusively(resources, locks, job))
        await asyncio.wait_for(started.wait(), timeout=20)
        tick.cancel()
        assert await asyncio.wait_for(tick, timeout=20) is None
        assert not tick.cancelled()
        started.clear()
        again = asyncio.create_task(run_exclusively(resources, locks, job))
        await asyncio.wait_for(started.wait(), timeout=20)
        assert runs == 2
        again.cancel()
        await asyncio.wait_for(again, timeout=20)
    finally:
        await locks.close()
        await resources.close()
