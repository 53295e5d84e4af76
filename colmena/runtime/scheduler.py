"""Periodic jobs: the outbox relay and whatever domain modules register with `scheduled`.

APScheduler keeps no state, so a run missed while the scheduler was down is not replayed; the
next tick is enough. A job belongs to the scheduler that first ticked it, by a PostgreSQL session
advisory lock named after the job and held on one connection of that scheduler's for as long as
it lives (`JobLocks`): a second scheduler started by mistake runs none of its jobs, and takes
them over, tick by tick, once the first one is gone (its session ends, PostgreSQL frees the
locks). Holding the locks, rather than taking and releasing one around every tick, keeps the
jobs that tick every second from costing two statements and two transactions each time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import asyncpg
import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from colmena.runtime.outbox import relay_until_empty
from colmena.runtime.resources import Resources
from colmena.store.locks import lock_space, try_keeping
from colmena.store.pool import connect

log = structlog.get_logger(__name__)

JobFn = Callable[[Resources], Awaitable[object]]


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    trigger: BaseTrigger
    fn: JobFn


# The one process-wide registry of jobs, filled at import by `scheduled`.
_JOBS: dict[str, ScheduledJob] = {}

JOB_LOCK_SPACE = lock_space("JOBS")


def scheduled(name: str, trigger: BaseTrigger) -> Callable[[JobFn], JobFn]:
    """Register `async def job(resources)` to run on `trigger` in the scheduler process.

    A second job of the same name is refused: its advisory lock would make the two skip each
    other's ticks.
    """

    def register(fn: JobFn) -> JobFn:
        existing = _JOBS.get(name)
        if existing is not None and existing.fn is not fn:
            raise ValueError(f"two scheduled jobs are named {name!r}")
        _JOBS[name] = ScheduledJob(name=name, trigger=trigger, fn=fn)
        return fn

    return register


def registered_jobs() -> list[ScheduledJob]:
    """Every job registered so far (import the actor modules first)."""
    return list(_JOBS.values())


class JobLocks:
    """The advisory locks of the jobs this scheduler runs, on a connection of their own.

    A lock, once taken, is kept until `close` or until the connection is lost (a restarted
    PostgreSQL frees every lock it held); then the connection is made again and each job's lock
    taken again at its next tick, if no other scheduler took it meanwhile.
    """

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._conn: asyncpg.Connection | None = None
        self._held: set[str] = set()
        self._lock = asyncio.Lock()  # one statement at a time on the connection

    async def owns(self, job_name: str) -> bool:
        """Whether this scheduler holds the job's lock, taking it if it is free."""
        async with self._lock:
            if self._conn is None or self._conn.is_closed():
                self._held.clear()
                self._conn = await connect(self._database_url)
            if job_name not in self._held:
                if await try_keeping(self._conn, JOB_LOCK_SPACE, job_name):
                    self._held.add(job_name)
            return job_name in self._held

    async def close(self) -> None:
        """Give the jobs up (closing the session frees its locks)."""
        async with self._lock:
            conn, self._conn = self._conn, None
            self._held.clear()
        if conn is not None:
            await conn.close()


async def run_exclusively(resources: Resources, locks: JobLocks, job: ScheduledJob) -> None:
    """Run one tick if this scheduler owns the job; skip it when another scheduler does.

    A tick cancelled because the process stops (Ctrl-C on `colmena dev`, SIGTERM) ends here
    with one line: this is the top of the tick's task, and APScheduler would print a traceback
    for it. Its work is left as a crash would leave it; the next tick does it again."""
    await resources.start()
    if not await locks.owns(job.name):
        log.info("job skipped: another scheduler runs it", job=job.name)
        return
    try:
        with structlog.contextvars.bound_contextvars(job=job.name):
            await job.fn(resources)
    except asyncio.CancelledError:
        log.info("scheduled job stopped with the process", job=job.name)
    except Exception:
        log.exception("scheduled job failed", job=job.name)


async def relay_job(resources: Resources) -> None:
    await relay_until_empty(
        resources.pool, resources.publisher, grace_s=resources.settings.relay_grace_s
    )


def build_scheduler(
    resources: Resources, locks: JobLocks, jobs: Iterable[ScheduledJob]
) -> AsyncIOScheduler:
    """An AsyncIOScheduler with the relay and `jobs`, not yet started; `locks` says which of
    them this scheduler runs."""
    scheduler = AsyncIOScheduler(timezone="UTC")
    relay = ScheduledJob(
        "outbox-relay", IntervalTrigger(seconds=resources.settings.relay_interval_s), relay_job
    )
    for job in [relay, *jobs]:
        scheduler.add_job(
            run_exclusively,
            job.trigger,
            args=(resources, locks, job),
            id=job.name,
            name=job.name,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=30,
        )
    return scheduler


async def run_forever(
    resources: Resources, jobs: Iterable[ScheduledJob], stop: asyncio.Event
) -> None:
    """Start the scheduler and keep it until `stop` is set (SIGTERM)."""
    locks = JobLocks(resources.database_url)
    scheduler = build_scheduler(resources, locks, jobs)
    scheduler.start()
    log.info("scheduler started", jobs=[job.id for job in scheduler.get_jobs()])
    try:
        await stop.wait()
    finally:
        scheduler.shutdown(wait=False)
        await locks.close()
