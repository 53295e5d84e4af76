"""CrashLoopBackOff delays and OTP restart intensity, driven by an explicit clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from colmena.supervisor.restart_policy import Action, Crash, RestartPolicy, RestartState

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
