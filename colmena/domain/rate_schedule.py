"""When the rate scrapes run, as APScheduler 3 triggers in Caracas time.

The triggers are built here, not in the scheduler process, so the schedule is
a value tests can interrogate (next_run_times) instead of something they have
to wait for. Register them with colmena.runtime.scheduler.scheduled, which already
coalesces missed runs instead of replaying them.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

CARACAS = ZoneInfo("America/Caracas")
WORKING_DAYS = "mon-sat"


def bcv_trigger() -> CronTrigger:
    """08:00 and 13:00, Monday to Saturday: the BCV publishes once a day and
    the afternoon run catches the next business day's rate."""
    return CronTrigger(day_of_week=WORKING_DAYS, hour="8,13", minute=0, timezone=CARACAS)


def binance_trigger() -> OrTrigger:
    """Every 30 minutes from 07:00 to 19:00 inclusive, Monday to Saturday.

    One cron expression cannot say "19:00 but not 19:30", hence the second
    trigger for the closing run.
    """
    return OrTrigger(
        [
            CronTrigger(day_of_week=WORKING_DAYS, hour="7-18", minute="0,30", timezone=CARACAS),
            CronTrigger(day_of_week=WORKING_DAYS, hour=19, minute=0, timezone=CARACAS),
        ]
    )


def next_run_times(trigger: BaseTrigger, start: datetime, count: int) -> list[datetime]:
    """The next `count` fire times at or after `start` (an aware datetime),
    in Caracas time, computed exactly as the scheduler would."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    runs: list[datetime] = []
    previous: datetime | None = None
    now = start
    while len(runs) < count:
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None:
            break
        runs.append(fire.astimezone(CARACAS))
        previous = now = fire
    return runs
