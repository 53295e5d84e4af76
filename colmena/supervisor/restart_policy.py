"""When to restart a crashed bot, and when to give up.

Kubernetes' CrashLoopBackOff supplies the delay (10 s doubling to 5 min, reset after a run
long enough to count as stable); Erlang/OTP's restart intensity supplies the limit (more than
`max_restarts` restarts within `window` and the supervisor stops trying). Pure: the caller
keeps a RestartState per tenant and passes the clock in, so the rules are testable without
waiting and survive a supervisor restart when the state is stored. Three kinds of failure go
through the same rules: a bot that exited, one still running whose heartbeat stayed stale for
longer than `unhealthy_grace` (`on_hang`: it counts as crashed when the grace ran out), and one
the runtime could not start (a crash that took no time).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta


class Action(enum.StrEnum):
    RESTART = "restart"
    WAIT = "wait"
    CRASHLOOP = "crashloop"


@dataclass(frozen=True)
class RestartState:
    """What the policy remembers about one tenant's bot between crashes.

    A fresh `RestartState()` is the reset: store one when the tenant or an operator acts
    (start, restart, new config), which is what lifts a crashloop.
    """

    restarts: tuple[datetime, ...] = ()
    streak: int = 0
    crashloop: bool = False


@dataclass(frozen=True)
class Crash:
    """One observed exit of a bot that should have kept running."""

    started_at: datetime
    finished_at: datetime


@dataclass(frozen=True)
class Decision:
    action: Action
    restart_at: datetime | None
    backoff: timedelta | None
    reason: str


@dataclass(frozen=True)
class RestartPolicy:
    initial_backoff: timedelta = timedelta(seconds=10)
    max_backoff: timedelta = timedelta(minutes=5)
    max_restarts: int = 5
    window: timedelta = timedelta(minutes=10)
    stable_after: timedelta = timedelta(minutes=10)
    unhealthy_grace: timedelta = timedelta(minutes=2)

    def backoff(self, streak: int) -> timedelta:
        # Cap the exponent before multiplying so a long streak cannot overflow timedelta.
        doublings = min(streak, 32)
        return min(self.initial_backoff * (1 << doublings), self.max_backoff)

    def on_crash(
        self, state: RestartState, crash: Crash, now: datetime
    ) -> tuple[RestartState, Decision]:
        """Decide about `crash` at `now`; the returned state is the one to store.

        Idempotent while waiting: asking again about the same crash before its restart time
        returns the state unchanged, so a periodic reconciler may ask on every pass. A
        RESTART decision means "restart now" and its state already counts that restart.
        """
        if state.crashloop:
            return state, Decision(Action.CRASHLOOP, None, None, "in crashloop until reset")

        recent = tuple(t for t in state.restarts if now - t < self.window)
        if len(recent) >= self.max_restarts:
            reason = f"{len(recent)} restarts within {self.window}, limit {self.max_restarts}"
            return (
                RestartState(restarts=recent, streak=state.streak, crashloop=True),
                Decision(Action.CRASHLOOP, None, None, reason),
            )

        ran_stably = crash.finished_at - crash.started_at >= self.stable_after
        streak = 0 if ran_stably else state.streak
        delay = self.backoff(streak)
        restart_at = crash.finished_at + delay
        if now < restart_at:
            return state, Decision(Action.WAIT, restart_at, delay, "backing off")
        return (
            RestartState(restarts=(*recent, now), streak=streak + 1),
            Decision(Action.RESTART, now, delay, "backoff elapsed"),
        )

    def on_hang(
        self, state: RestartState, *, started_at: datetime, unhealthy_since: datetime, now: datetime
    ) -> tuple[RestartState, Decision] | None:
        """Decide about a running bot unhealthy since `unhealthy_since`; None while it still has
        its grace (leave it running). After that it is a crash that happened when the grace ran
        out, so backoff and intensity apply as to any other."""
        gave_up_at = unhealthy_since + self.unhealthy_grace
        if now < gave_up_at:
            return None
        crash = Crash(started_at=min(started_at, unhealthy_since), finished_at=gave_up_at)
        return self.on_crash(state, crash, now)
