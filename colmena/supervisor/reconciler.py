"""What to do about one tenant's bot, given what the tenant wants and what the runtime shows.

Pure, so every rule is testable without a runtime: the caller (colmena.actors.bots) reads the
desired state, lists the runtime once, asks `decide` per tenant and carries the step out.
Rules, in order: stopped means no bot; a restart command replaces the bot; after a start the
runtime refused, the restart policy says when to try again; no bot, a bot that never started or
one with an old config is (re)started at once; a running bot whose heartbeat stays stale past
its grace, and one that exited while it should run, are crashes, and the restart policy says
restart, wait, or crashloop.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from colmena.config import Settings
from colmena.supervisor.restart_policy import (
    Action,
    Crash,
    Decision,
    RestartPolicy,
    RestartState,
)
from colmena.supervisor.runtime import BotLimits, BotSpec, BotState, BotStatus

MiB = 1024 * 1024


class Do(enum.StrEnum):
    NOTHING = "nothing"
    START = "start"
    STOP = "stop"
    RESTART = "restart"  # a crash restarted under the policy (counts as a restart)
    WAIT = "wait"
    CRASHLOOP = "crashloop"
    START_FAILED = "start_failed"  # what a START or RESTART became when the runtime refused


class Cause(enum.StrEnum):
    """Why the restart policy was asked: what a restart's metric and log line name."""

    CRASH = "crash"
    HANG = "hang"
    START_FAILURE = "start_failure"


@dataclass(frozen=True)
class Step:
    do: Do
    # running, stopped, backoff, start_failed, crashloop, unknown: what the tenant and metrics see
    observed: str
    reason: str
    state: RestartState | None = None  # the restart state to store, when it changed
    restart_at: datetime | None = None
    cause: Cause | None = None  # set when the restart policy decided


def policy_from(settings: Settings) -> RestartPolicy:
    window = timedelta(seconds=settings.bot_restart_window_seconds)
    return RestartPolicy(
        initial_backoff=timedelta(seconds=settings.bot_restart_backoff_seconds),
        max_backoff=timedelta(seconds=settings.bot_restart_max_backoff_seconds),
        max_restarts=settings.bot_restart_max,
        window=window,
        stable_after=window,
        unhealthy_grace=timedelta(seconds=settings.bot_unhealthy_restart_seconds),
    )


def spec_for(
    tenant_id: str,
    config: Mapping[str, Any],
    config_version: int,
    *,
    memory_mb: int,
    cpu_millis: int,
    settings: Settings,
) -> BotSpec:
    """The bot a tenant's row asks for, without its keys (they do not change its identity)."""
    return BotSpec(
        tenant_id=tenant_id,
        config=dict(config),
        config_version=config_version,
        limits=BotLimits(memory_bytes=memory_mb * MiB, cpu_millis=cpu_millis),
        env={"BOT_HEARTBEAT_SECONDS": str(settings.bot_heartbeat_seconds)},
    )


def with_keys(spec: BotSpec, keys: Mapping[str, str]) -> BotSpec:
    """The spec to create the bot with: provider keys by provider, for its keys file."""
    return replace(spec, secrets=dict(keys))


def decide(
    *,
    desired_running: bool,
    restart_state: RestartState,
    config_hash: str,
    actual: BotStatus | None,
    policy: RestartPolicy,
    now: datetime,
    force_restart: bool = False,
    start_failed_at: datetime | None = None,
    start_error: str | None = None,
    unhealthy_since: datetime | None = None,
) -> Step:
    """`start_failed_at`: the last start the runtime refused, if no start succeeded since;
    `unhealthy_since`: since when the running bot's heartbeat is stale, if it is."""
    if not desired_running:
        return Step(Do.STOP if actual is not None else Do.NOTHING, "stopped", "desired stopped")
    if force_restart:
        return Step(Do.START, "running", "restart requested")
    if start_failed_at is not None and (actual is None or actual.state is BotState.CREATED):
        failed = Crash(started_at=start_failed_at, finished_at=start_failed_at)
        return _by_policy(
            policy.on_crash(restart_state, failed, now),
            restart_state,
            f"start failed ({start_error})",
            Cause.START_FAILURE,
            waiting="start_failed",
        )
    if actual is None:
        return Step(Do.START, "running", "desired running, no bot")
    if actual.state is BotState.CREATED:
        return Step(Do.START, "running", "bot created but never started")
    if actual.state is BotState.UNKNOWN:
        return Step(Do.NOTHING, "unknown", "runtime reports a transitional state")
    if actual.config_hash != config_hash:
        return Step(Do.START, "running", "config or plan changed")
    if actual.state is BotState.RUNNING:
        if unhealthy_since is None:
            return Step(Do.NOTHING, "running", "running as desired")
        hung = policy.on_hang(
            restart_state,
            started_at=actual.started_at or unhealthy_since,
            unhealthy_since=unhealthy_since,
            now=now,
        )
        stale = f"no heartbeat since {unhealthy_since.isoformat(timespec='seconds')}"
        if hung is None:
            return Step(Do.NOTHING, "running", stale)
        return _by_policy(hung, restart_state, stale, Cause.HANG, waiting="running")
    finished = actual.finished_at or now
    crash = Crash(started_at=actual.started_at or finished, finished_at=finished)
    return _by_policy(
        policy.on_crash(restart_state, crash, now),
        restart_state,
        f"crashed (exit {actual.exit_code})",
        Cause.CRASH,
        waiting="backoff",
    )


def _by_policy(
    decided: tuple[RestartState, Decision],
    restart_state: RestartState,
    what: str,
    cause: Cause,
    *,
    waiting: str,
) -> Step:
    """The step for the policy's decision about a failure; `waiting` is what the tenant sees
    while the backoff runs (a hung bot is still running meanwhile)."""
    state, decision = decided
    if decision.action is Action.RESTART:
        return Step(Do.RESTART, "running", f"{what}; {decision.reason}", state, cause=cause)
    if decision.action is Action.WAIT:
        return Step(
            Do.WAIT, waiting, f"{what}; {decision.reason}", None, decision.restart_at, cause
        )
    newly = not restart_state.crashloop
    reason = decision.reason if cause is Cause.CRASH else f"{decision.reason}; last: {what}"
    return Step(Do.CRASHLOOP, "crashloop", reason, state if newly else None, cause=cause)


def after_failed_start(
    step: Step, error: str, restart_state: RestartState, policy: RestartPolicy, now: datetime
) -> Step:
    """What a START or RESTART became when the runtime refused it: a failure at `now` that the
    restart policy retries after its backoff (an attempted restart still counts). Past the
    intensity limit the next pass is due at once: `decide` declares the crashloop there."""
    state = step.state or restart_state
    failed = Crash(started_at=now, finished_at=now)
    _, decision = policy.on_crash(state, failed, now)
    return Step(
        Do.START_FAILED,
        "start_failed",
        f"start failed: {error}",
        step.state,
        decision.restart_at or now,
        Cause.START_FAILURE,
    )


def stale_for_long(
    previous_since: datetime | None,
    previous_seen_at: datetime | None,
    since: datetime | None,
    now: datetime,
    grace: timedelta,
) -> bool:
    """Whether a bot without heartbeats (`since`) crossed `grace` at this pass: the moment to
    tell the tenant. A bot just started has not beaten yet, so "no heartbeat" alone is no news;
    one still silent after the heartbeat's whole allowance is, once."""
    if since is None or now - since < grace:
        return False
    if previous_since is None or previous_seen_at is None:
        return True
    return previous_seen_at - previous_since < grace


def bot_events(
    previous_observed: str, decided: Step, done: Step, *, became_unhealthy: bool
) -> list[str]:
    """The tenant events (colmena.domain.notifications.EVENT_KINDS) of one converge.

    `previous_observed` is what the tenant last saw, `decided` the step `decide` chose and `done`
    what carrying it out became (a refused start turns a START into START_FAILED);
    `became_unhealthy` comes from `stale_for_long`. Each event is
    a change, so a pass that sees the same state again says nothing: a crash is news when the
    bot was not already backing off from one, a start when the bot was not seen running, a stop
    when it was not seen stopped, a crashloop only when it begins.
    """
    events = []
    if became_unhealthy:
        events.append("bot.unhealthy")
    if (
        decided.cause is Cause.CRASH
        and decided.do in (Do.RESTART, Do.WAIT)
        and previous_observed != "backoff"
    ):
        events.append("bot.crashed")
    if done.do is Do.CRASHLOOP and done.state is not None:
        events.append("bot.crashloop")
    if done.do in (Do.START, Do.RESTART) and previous_observed != "running":
        events.append("bot.started")
    if done.observed == "stopped" and previous_observed != "stopped":
        events.append("bot.stopped")
    return events
