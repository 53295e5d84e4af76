"""Periodic jobs: the outbox relay and whatever domain modules register with `scheduled`.

APScheduler keeps no state, so a run missed while the scheduler was down is not replayed; the
next tick is enough. Each tick takes a PostgreSQL advisory lock named after the job, so running
two schedulers by mistake never runs a job twice at once.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from colmena.resources import Resources

log = structlog.get_logger(__name__)

JobFn = Callable[[Resources], Awaitable[object]]


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    trigger: BaseTrigger
    fn: JobFn


_JOBS: dict[str, ScheduledJob] = {}


def scheduled(name: str, trigger: BaseTrigger) -> Callable[[JobFn], JobFn]:
    """Register `async def job(resources)` to run on `trigger` in the scheduler process."""

    def register(fn: JobFn) -> JobFn:
        _JOBS[name] = ScheduledJob(name=name, trigger=trigger, fn=fn)
        return fn

    return register


def registered_jobs() -> dict[str, ScheduledJob]:
    from colmena.actors import import_all

    import_all()

    return dict(_JOBS)


def _lock_key(name: str) -> int:
    return zlib.crc32(f"colmena.job.{name}".encode())


async def run_exclusively(resources: Resources, job: ScheduledJob) -> None:
    """Run one tick under the job's advisory lock; skip it when another scheduler holds it."""
    await resources.start()
    async with resources.pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _lock_key(job.name)):
            log.info("job skipped: another scheduler runs it", job=job.name)
            return
        try:
            with structlog.contextvars.bound_contextvars(job=job.name):
                await job.fn(resources)
        except Exception:
            log.exception("scheduled job failed", job=job.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _lock_key(job.name))


async def relay_job(resources: Resources) -> None:
    # Imported here: colmena.actors' modules import this one to register their jobs.
    from colmena.actors.outbox import relay_until_empty

    await relay_until_empty(resources.pool, resources.publisher, grace_s=resources.settings.relay_grace_s)


def build_scheduler(resources: Resources) -> AsyncIOScheduler:
    """An AsyncIOScheduler with the relay and every registered job, not yet started."""
    scheduler = AsyncIOScheduler(timezone="UTC")
    jobs = [
        ScheduledJob("outbox-relay", IntervalTrigger(seconds=resources.settings.relay_interval_s), relay_job),
        *registered_jobs().values(),
    ]
    for job in jobs:
        scheduler.add_job(
            run_exclusively, job.trigger, args=(resources, job), id=job.name, name=job.name,
            coalesce=True, max_instances=1, misfire_grace_time=30,
        )
    return scheduler


async def run_forever(resources: Resources, stop: asyncio.Event) -> None:
    """Start the scheduler and keep it until `stop` is set (SIGTERM)."""
    scheduler = build_scheduler(resources)
    scheduler.start()
    log.info("scheduler started", jobs=[job.id for job in scheduler.get_jobs()])
    try:
        await stop.wait()
    finally:
        scheduler.shutdown(wait=False)
