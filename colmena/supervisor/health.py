"""Bot health: running, and a heartbeat line in its log recently.

A running process can be wedged; the heartbeat proves the bot's loop still turns. The line
format is the contract with ops/bot/bot.sh: ``colmena-heartbeat <unix seconds>``. A heartbeat is
recent when it is younger than six intervals (a minute at the default ten seconds), so a slow
pass or a busy bot is not mistaken for a wedged one. What happens to an unhealthy bot is the
restart policy's call (`RestartPolicy.on_hang`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from colmena.supervisor.runtime import BotNotFound, BotState, BotStatus, Runtime

HEARTBEAT_PREFIX = "colmena-heartbeat "
MAX_HEARTBEAT_AGE = timedelta(seconds=60)
HEARTBEATS_MISSED = 6
# Enough lines to cover a minute of heartbeats plus whatever the bot logged in between.
HEALTH_LOG_TAIL = 200


def parse_heartbeat(line: str) -> datetime | None:
    """The heartbeat's time, or None when the line is not a well-formed heartbeat."""
    if not line.startswith(HEARTBEAT_PREFIX):
        return None
    stamp = line[len(HEARTBEAT_PREFIX) :].strip()
    if not stamp.isdigit():
        return None
    return datetime.fromtimestamp(int(stamp), tz=UTC)


def heartbeat_max_age(interval_s: float) -> timedelta:
    """How old the last heartbeat may be for a bot told to beat every `interval_s` seconds."""
    return timedelta(seconds=HEARTBEATS_MISSED * interval_s)


def last_heartbeat(lines: Iterable[str]) -> datetime | None:
    beats = (parse_heartbeat(line) for line in lines)
    return max((beat for beat in beats if beat is not None), default=None)


def is_healthy(
    status: BotStatus,
    heartbeat: datetime | None,
    now: datetime,
    max_age: timedelta = MAX_HEARTBEAT_AGE,
) -> bool:
    if status.state is not BotState.RUNNING or heartbeat is None:
        return False
    return now - heartbeat <= max_age


def check_health(
    runtime: Runtime,
    status: BotStatus,
    now: datetime,
    max_age: timedelta = MAX_HEARTBEAT_AGE,
) -> bool:
    """Read the bot's recent log through the runtime and judge it."""
    if status.tenant_id is None or status.state is not BotState.RUNNING:
        return False
    try:
        lines = runtime.logs(status.tenant_id, tail=HEALTH_LOG_TAIL)
    except BotNotFound:
        return False
    return is_healthy(status, last_heartbeat(lines), now, max_age)
