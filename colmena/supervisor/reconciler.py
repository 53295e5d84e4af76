"""What to do about one tenant's bot, given what the tenant wants and what the runtime shows.

Pure, so every rule is testable without a runtime: the caller (colmena.actors.bots) reads the
desired state, lists the runtime once, asks `decide` per tenant and carries the step out.
Rules, in order: stopped means no bot; a restart command replaces the bot; no bot, a bot that
never started or one with an old config is (re)started at once; a bot that exited while it
should run is a crash, and the restart policy says restart, wait, or crashloop.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from colmena.config import Settings
from colmena.supervisor.restart_policy import Action, Crash, RestartPolicy, RestartState
from colmena.supervisor.runtime import BotLimits, BotSpec, BotState, BotStatus

MiB = 1024 * 1024
KEY_ENV_PREFIX = "BOT_KEY_"


class Do(enum.StrEnum):
    NOTHING = "nothing"
    START = "start"
    STOP = "stop"
    RESTART = "restart"  # a crash restarted under the policy (counts as a restart)
    WAIT = "wait"
    CRASHLOOP = "crashloop"


@dataclass(frozen=True)
class Step:
    do: Do
    observed: str  # running, stopped, backoff, crashloop, unknown: what the tenant and metrics see
    reason: str
    state: RestartState | None = None  # the restart state to store, when it changed
    restart_at: datetime | None = None


def policy_from(settings: Settings) -> RestartPolicy:
    window = timedelta(seconds=settings.bot_restart_window_seconds)
    return RestartPolicy(
        initial_backoff=timedelta(seconds=settings.bot_restart_backoff_seconds),
        max_backoff=timedelta(seconds=settings.bot_restart_max_backoff_seconds),
        max_restarts=settings.bot_restart_max,
        window=window,
        stable_after=window,
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
    """The spec to create the bot with: provider keys as BOT_KEY_<PROVIDER> variables."""
    return replace(
        spec, secrets={f"{KEY_ENV_PREFIX}{provider.upper()}": key for provider, key in keys.items()}
    )


def decide(
    *,
    desired_running: bool,
    restart_state: RestartState,
    config_hash: str,
    actual: BotStatus | None,
    policy: RestartPolicy,
    now: datetime,
    force_restart: bool = False,
) -> Step:
    if not desired_running:
        return Step(Do.STOP if actual is not None else Do.NOTHING, "stopped", "desired stopped")
    if force_restart:
        return Step(Do.START, "running", "restart requested")
    if actual is None:
        return Step(Do.START, "running", "desired running, no bot")
    if actual.state is BotState.CREATED:
        return Step(Do.START, "running", "bot created but never started")
    if actual.state is BotState.UNKNOWN:
        return Step(Do.NOTHING, "unknown", "runtime reports a transitional state")
    if actual.config_hash != config_hash:
        return Step(Do.START, "running", "config or plan changed")
    if actual.state is BotState.RUNNING:
        return Step(Do.NOTHING, "running", "running as desired")
    finished = actual.finished_at or now
    crash = Crash(started_at=actual.started_at or finished, finished_at=finished)
    state, decision = policy.on_crash(restart_state, crash, now)
    if decision.action is Action.RESTART:
        return Step(
            Do.RESTART, "running", f"crashed (exit {actual.exit_code}); {decision.reason}", state
        )
    if decision.action is Action.WAIT:
        return Step(
            Do.WAIT,
            "backoff",
            f"crashed (exit {actual.exit_code}); {decision.reason}",
            None,
            decision.restart_at,
        )
    newly = not restart_state.crashloop
    return Step(Do.CRASHLOOP, "crashloop", decision.reason, state if newly else None)
