"""Periodic jobs: the outbox relay and whatever domain modules register with `scheduled`.

APScheduler keeps no state, so a run missed while the scheduler was down is not replayed; the
next tick is enough. Each tick takes a PostgreSQL advisory lock named after the job, so running
two schedulers by mistake never runs a job twice at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from colmena.runtime.outbox import relay_until_empty
from colmena.runtime.resources import Resources
from colmena.store.locks import lock_space, try_advisory_lock

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


async def run_exclusively(resources: Resources, job: ScheduledJob) -> None:
    """Run one tick under the job's advisory lock; skip it when another scheduler holds it."""
    await resources.start()
    async with (
        resources.pool.acquire() as conn,
        try_advisory_lock(conn, JOB_LOCK_SPACE, job.name) as got,
    ):
        if not got:
            log.info("job skipped: another scheduler runs it", job=job.name)
            return
        try:
            with structlog.contextvars.bound_contextvars(job=job.name):
                await job.fn(resources)
        except Exception:
            log.exception("scheduled job failed", job=job.name)


async def relay_job(resources: Resources) -> None:
    await relay_until_empty(
        resources.pool, resources.publisher, grace_s=resources.settings.relay_grace_s
    )


def build_scheduler(resources: Resources, jobs: Iterable[ScheduledJob]) -> AsyncIOScheduler:
    """An AsyncIOScheduler with the relay and `jobs`, not yet started."""
    scheduler = AsyncIOScheduler(timezone="UTC")
    relay = ScheduledJob(
        "outbox-relay", IntervalTrigger(seconds=resources.settings.relay_interval_s), relay_job
    )
    for job in [relay, *jobs]:
        scheduler.add_job(
            run_exclusively,
            job.trigger,
            args=(resources, job),
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
    scheduler = build_scheduler(resources, jobs)
    scheduler.start()
    log.info("scheduler started", jobs=[job.id for job in scheduler.get_jobs()])
    try:
        await stop.wait()
    finally:
        scheduler.shutdown(wait=False)
