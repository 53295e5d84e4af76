"""CrashLoopBackOff delays and OTP restart intensity, driven by an explicit clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from colmena.supervisor.reconciler import Cause, Do, after_failed_start, decide
from colmena.supervisor.restart_policy import Action, Crash, RestartPolicy, RestartState
from colmena.supervisor.runtime import BotState, BotStatus

T0 = datetime(2030, 1, 1, tzinfo=UTC)
POLICY = RestartPolicy(max_restarts=3, window=timedelta(minutes=10))


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def crash_quickly(state: RestartState, at: datetime) -> tuple[RestartState, datetime]:
    """A bot that dies 1 s after starting at `at`, restarted as soon as the policy allows."""
    crash = Crash(started_at=at, finished_at=at + s(1))
    waiting, decision = POLICY.on_crash(state, crash, crash.finished_at)
    assert decision.action is Action.WAIT and decision.restart_at is not None
    restart_at = decision.restart_at
    restarted, decision = POLICY.on_crash(waiting, crash, restart_at)
    assert decision.action is Action.RESTART
    return restarted, restart_at


def test_first_restart_waits_ten_seconds_then_restarts() -> None:
    crash = Crash(started_at=T0, finished_at=T0 + s(5))

    state, decision = POLICY.on_crash(RestartState(), crash, T0 + s(6))
    assert decision.action is Action.WAIT
    assert decision.restart_at == T0 + s(15)
    assert state == RestartState()

    state, decision = POLICY.on_crash(state, crash, T0 + s(15))
    assert decision.action is Action.RESTART
    assert state.streak == 1 and state.restarts == (T0 + s(15),)


def test_waiting_is_idempotent_for_a_periodic_reconciler() -> None:
    crash = Crash(started_at=T0, finished_at=T0)
    first = POLICY.on_crash(RestartState(), crash, T0 + s(1))
    again = POLICY.on_crash(first[0], crash, T0 + s(2))
    assert first[0] == again[0] == RestartState()
    assert first[1].restart_at == again[1].restart_at == T0 + s(10)


def test_backoff_doubles_from_ten_seconds_to_five_minutes() -> None:
    policy = RestartPolicy()
    assert [policy.backoff(n).total_seconds() for n in range(7)] == [10, 20, 40, 80, 160, 300, 300]


@given(st.integers(min_value=0, max_value=10_000))
def test_backoff_never_exceeds_the_cap_and_never_shrinks(streak: int) -> None:
    policy = RestartPolicy()
    assert policy.initial_backoff <= policy.backoff(streak) <= policy.max_backoff
    assert policy.backoff(streak) <= policy.backoff(streak + 1)


def test_successive_crashes_wait_longer_each_time() -> None:
    state, at = RestartState(), T0
    delays = []
    for _ in range(3):
        crash = Crash(started_at=at, finished_at=at + s(1))
        _, decision = POLICY.on_crash(state, crash, crash.finished_at)
        delays.append(decision.backoff)
        state, at = crash_quickly(state, at)
    assert delays == [s(10), s(20), s(40)]


def test_more_than_max_restarts_in_the_window_is_a_crashloop_until_reset() -> None:
    state, at = RestartState(), T0
    for _ in range(3):
        state, at = crash_quickly(state, at)
    assert len(state.restarts) == 3 and not state.crashloop

    crash = Crash(started_at=at, finished_at=at + s(1))
    state, decision = POLICY.on_crash(state, crash, at + s(500))
    assert decision.action is Action.CRASHLOOP
    assert state.crashloop

    # No restart however long one waits, until someone acts.
    later, decision = POLICY.on_crash(state, crash, at + timedelta(days=1))
    assert later == state and decision.action is Action.CRASHLOOP

    _, decision = POLICY.on_crash(RestartState(), crash, at + s(500))
    assert decision.action is Action.RESTART


def test_restarts_older_than_the_window_do_not_count() -> None:
    old = RestartState(restarts=(T0, T0 + s(60), T0 + s(120)), streak=3)
    crash = Crash(started_at=T0 + s(120), finished_at=T0 + s(121))
    now = T0 + timedelta(minutes=11)

    state, decision = POLICY.on_crash(old, crash, now)
    assert decision.action is Action.RESTART
    assert state.restarts == (T0 + s(120), now)
    assert decision.backoff == s(80)  # the streak of quick crashes still counts


def test_a_stable_run_resets_the_backoff() -> None:
    state = RestartState(restarts=(T0,), streak=4)
    crash = Crash(started_at=T0, finished_at=T0 + timedelta(minutes=30))

    _, decision = POLICY.on_crash(state, crash, crash.finished_at)
    assert decision.action is Action.WAIT
    assert decision.backoff == s(10)


# Bots that stop beating, and starts the runtime refuses -----------------------------------------

GRACE = POLICY.unhealthy_grace


def test_an_unhealthy_bot_keeps_running_through_its_grace() -> None:
    since = T0 + s(3600)
    for now in (since, since + GRACE - s(1)):
        assert POLICY.on_hang(RestartState(), started_at=T0, unhealthy_since=since, now=now) is None


def test_a_hung_bot_is_a_crash_when_the_grace_runs_out_and_backs_off_from_then() -> None:
    since = T0 + s(3600)
    gave_up = since + GRACE
    waiting = POLICY.on_hang(RestartState(), started_at=T0, unhealthy_since=since, now=gave_up)
    assert waiting is not None
    state, decision = waiting
    assert decision.action is Action.WAIT and decision.restart_at == gave_up + s(10)
    restart = POLICY.on_hang(state, started_at=T0, unhealthy_since=since, now=gave_up + s(10))
    assert restart is not None and restart[1].action is Action.RESTART
    # It ran an hour before it hung: stable, so the streak starts again.
    assert restart[0] == RestartState(restarts=(gave_up + s(10),), streak=1)


def test_bots_that_hang_right_after_start_end_in_crashloop() -> None:
    state, at = RestartState(), T0
    for _ in range(POLICY.max_restarts):
        since = at + s(1)
        _, decision = POLICY.on_hang(state, started_at=at, unhealthy_since=since, now=since + GRACE)
        restart_at = decision.restart_at
        assert decision.action is Action.WAIT and restart_at is not None
        state, decision = POLICY.on_hang(
            state, started_at=at, unhealthy_since=since, now=restart_at
        )
        assert decision.action is Action.RESTART
        at = restart_at
    since = at + s(1)
    state, decision = POLICY.on_hang(state, started_at=at, unhealthy_since=since, now=since + GRACE)
    assert decision.action is Action.CRASHLOOP and state.crashloop


@given(st.integers(min_value=0, max_value=10**7), st.integers(min_value=0, max_value=10**7))
def test_a_hang_is_never_acted_on_before_its_grace(age_ms: int, grace_ms: int) -> None:
    policy = RestartPolicy(unhealthy_grace=timedelta(milliseconds=grace_ms))
    since = T0 + s(60)
    decided = policy.on_hang(
        RestartState(),
        started_at=T0,
        unhealthy_since=since,
        now=since + timedelta(milliseconds=age_ms),
    )
    assert (decided is None) == (age_ms < grace_ms)


def test_refused_starts_back_off_and_end_in_crashloop_with_the_engine_message() -> None:
    """The reconciler's rules for a start the runtime refuses, with an explicit clock."""
    config = "abc"
    state, now, failed_at = RestartState(), T0, T0
    for attempt in range(POLICY.max_restarts):
        step = decide(
            desired_running=True,
            restart_state=state,
            config_hash=config,
            actual=None,
            policy=POLICY,
            now=now,
            start_failed_at=failed_at,
            start_error="exec: no-such-bot",
        )
        assert (step.do, step.observed) == (Do.WAIT, "start_failed")
        assert step.restart_at == failed_at + POLICY.backoff(attempt)
        now = step.restart_at
        step = decide(
            desired_running=True,
            restart_state=state,
            config_hash=config,
            actual=None,
            policy=POLICY,
            now=now,
            start_failed_at=failed_at,
            start_error="exec: no-such-bot",
        )
        assert step.do is Do.RESTART and step.cause is Cause.START_FAILURE
        failed = after_failed_start(step, "exec: no-such-bot", state, POLICY, now + s(1))
        assert failed.do is Do.START_FAILED and failed.restart_at is not None
        assert step.state is not None
        state, failed_at = step.state, now + s(1)
    step = decide(
        desired_running=True,
        restart_state=state,
        config_hash=config,
        actual=None,
        policy=POLICY,
        now=failed_at,
        start_failed_at=failed_at,
        start_error="exec: no-such-bot",
    )
    assert step.do is Do.CRASHLOOP and step.state is not None and step.state.crashloop
    assert "no-such-bot" in step.reason


def test_without_a_failed_start_a_missing_bot_starts_at_once() -> None:
    step = decide(
        desired_running=True,
        restart_state=RestartState(),
        config_hash="abc",
        actual=None,
        policy=POLICY,
        now=T0,
    )
    assert step.do is Do.START


def test_a_running_bot_without_heartbeat_is_left_alone_within_its_grace() -> None:
    running = BotStatus("b", "t", BotState.RUNNING, 1, "abc", started_at=T0)
    kwargs = dict(
        desired_running=True,
        restart_state=RestartState(),
        config_hash="abc",
        actual=running,
        policy=POLICY,
        unhealthy_since=T0 + s(60),
    )
    within = decide(now=T0 + s(60) + GRACE - s(1), **kwargs)  # type: ignore[arg-type]
    assert (within.do, within.observed) == (Do.NOTHING, "running")
    assert "no heartbeat since" in within.reason
    past = decide(now=T0 + s(60) + GRACE + s(10), **kwargs)  # type: ignore[arg-type]
    assert past.do is Do.RESTART and past.cause is Cause.HANG
