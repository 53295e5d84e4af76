"""The loop worker (what `colmena worker` runs) on the real RabbitMQ: it keeps Dramatiq's
guarantees while consuming and running actors on the event loop.

Acks only after the actor finished; retries with backoff, then the dead letters (with the
reason recorded); time limits; `worker_threads` as a bound; a graceful stop that lets running
actors finish; a lost connection that redelivers what was not acked; the retry decisions of
Dramatiq's own Retries middleware; and `colmena worker` starting it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dramatiq
import pika
import pytest
import structlog
from dramatiq import MessageProxy
from dramatiq.brokers.stub import StubBroker
from dramatiq.errors import Retry
from dramatiq.middleware import CurrentMessage, Retries
from dramatiq.middleware.prometheus import Prometheus
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import SecretStr

from bench.standins.tcp_proxy import TcpProxy
from colmena.config import Settings
from colmena.errors import PermanentError
from colmena.runtime.broker import build_broker, create_broker
from colmena.runtime.follow_ups import LOCAL_RUNS_PER_MESSAGE, committed, leave_committed
from colmena.runtime.loop_worker import LoopWorker
from colmena.runtime.outbox import publish_now, relay_once
from colmena.runtime.publisher import AmqpPublisher, LeaveToRelay, Publisher
from colmena.runtime.queues import queue_declarations
from colmena.runtime.registry import actor, registered_actors
from colmena.runtime.resources import Resources
from colmena.runtime.retry_policy import GiveUp, RetryLater, after_failure
from colmena.store import outbox
from colmena.store.pool import create_pool
from tests.conftest import AMQP_URL, queue_counts, wait_for
from tests.fuzz_support import capture_logs
from tests.ops_support import colmena_env, free_port

QUEUE = "loopworker"
GATES: dict[str, threading.Event] = {}
RUNNING = {"now": 0, "most": 0}


def gate(label: str) -> threading.Event:
    return GATES.setdefault(label, threading.Event())


async def _note(resources: Resources, label: str, step: str) -> None:
    current = CurrentMessage.get_current_message()
    await resources.pool.execute(
        "INSERT INTO loop_attempts (label, step, message_id, current_id) VALUES ($1, $2, $3, $4)",
        label,
        step,
        structlog.contextvars.get_contextvars().get("message_id"),
        current.message_id if current is not None else None,
    )


@actor(queue=QUEUE, name="test_loop_records")
async def records(resources: Resources, label: str) -> None:
    await _note(resources, label, "ran")


@actor(queue=QUEUE, name="test_loop_fails")
async def fails(resources: Resources, label: str) -> None:
    await _note(resources, label, "ran")
    raise RuntimeError("boom")


@actor(queue=QUEUE, name="test_loop_fails_permanently")
async def fails_permanently(resources: Resources, label: str) -> None:
    await _note(resources, label, "ran")
    raise PermanentError("cannot ever work")


@actor(queue=QUEUE, name="test_loop_blocks")
async def blocks(resources: Resources, label: str) -> None:
    """Runs until the test opens its gate."""
    RUNNING["now"] += 1
    RUNNING["most"] = max(RUNNING["most"], RUNNING["now"])
    try:
        await _note(resources, label, "started")
        await asyncio.to_thread(gate(label).wait, 60)
        await _note(resources, label, "finished")
    finally:
        RUNNING["now"] -= 1


@actor(queue=QUEUE, name="test_loop_overruns", time_limit=50)
async def overruns(resources: Resources, label: str) -> None:
    await _note(resources, label, "started")
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        await _note(resources, label, "cancelled")
        raise


@actor(queue=QUEUE, name="test_loop_follows_up")
async def follows_up(resources: Resources, label: str, then: str, count: int = 1) -> None:
    """Writes `count` outbox rows for the actor `then`, and publishes them after commit."""
    async with resources.pool.acquire() as conn, conn.transaction():
        rows = [
            await outbox.record(conn, queue=QUEUE, actor=then, args=[f"{label}-{index}"])
            for index in range(count)
        ]
    await publish_now(resources.pool, resources.publisher, rows, marks=resources.published_marks)


@dataclass(frozen=True)
class Left:
    """What `test_loop_leaves_committed` committed, left to its follow-up."""

    label: str


@actor(queue=QUEUE, name="test_loop_leaves_committed")
async def leaves_committed(resources: Resources, label: str) -> None:
    """Writes one follow-up for `test_loop_reads_committed` and leaves it what it committed."""
    async with resources.pool.acquire() as conn, conn.transaction():
        row = await outbox.record(
            conn, queue=QUEUE, actor="test_loop_reads_committed", args=[label]
        )
    leave_committed(label, Left(label))
    await publish_now(resources.pool, resources.publisher, [row], marks=resources.published_marks)


@actor(queue=QUEUE, name="test_loop_reads_committed")
async def reads_committed(resources: Resources, label: str) -> None:
    await _note(resources, label, "found" if committed(Left, label) == Left(label) else "missing")


@dataclass
class LoopSystem:
    broker: dramatiq.Broker
    worker: LoopWorker
    resources: Resources


@pytest.fixture
async def attempts_table(db) -> None:
    await db.execute(
        "CREATE TABLE loop_attempts (label text, step text, message_id text, current_id text, "
        "at timestamptz DEFAULT clock_timestamp())"
    )


@pytest.fixture
def start_loop_worker(
    settings: Settings, attempts_table: None
) -> Iterator[Callable[..., LoopSystem]]:
    """A loop worker in this process for this module's actors, on this test's queues."""
    started: list[LoopSystem] = []
    RUNNING.update(now=0, most=0)

    def start(
        *,
        threads: int = 2,
        settings_override: Settings | None = None,
        metrics: bool = False,
        publisher: Publisher | None = None,
    ) -> LoopSystem:
        active = settings_override or settings
        resources = Resources(
            active,
            database_url=active.require_database_url(),
            publisher=publisher or AmqpPublisher(active.require_broker_url(), active.queue_prefix),
        )
        actors = [spec for spec in registered_actors() if spec.queue == QUEUE]
        broker = build_broker(
            active, resources, actors, broker_url=active.require_broker_url(), metrics=metrics
        )
        broker.emit_after("process_boot")
        worker = LoopWorker(broker, worker_threads=threads)
        worker.start()
        system = LoopSystem(broker=broker, worker=worker, resources=resources)
        started.append(system)
        return system

    yield start
    for event in GATES.values():
        event.set()
    GATES.clear()
    for system in started:
        system.worker.stop()
        system.broker.close()


def publish(queue: str, body: bytes) -> None:
    """Onto `queue`, declared first (the worker declares it too, but maybe not yet)."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        for name, arguments in queue_declarations(queue, quorum=False):
            channel.queue_declare(name, durable=True, arguments=arguments)
        channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    finally:
        connection.close()


def send(settings: Settings, actor_name: str, *args: object) -> dramatiq.Message:
    """A Dramatiq message for `actor_name`, straight onto this test's queue."""
    queue = settings.queue_prefix + QUEUE
    message = dramatiq.Message(
        queue_name=queue, actor_name=actor_name, args=args, kwargs={}, options={}
    )
    publish(queue, message.encode())
    return message


async def steps(db, label: str, step: str) -> list:
    return await db.fetch(
        "SELECT message_id, current_id, at FROM loop_attempts WHERE label = $1 AND step = $2 "
        "ORDER BY at",
        label,
        step,
    )


async def counts(settings: Settings) -> tuple[int, int, int]:
    return await asyncio.to_thread(queue_counts, settings.queue_prefix + QUEUE)


async def test_the_actor_runs_with_the_pool_and_its_message(start_loop_worker, db, settings):
    start_loop_worker()
    message = await asyncio.to_thread(send, settings, "test_loop_records", "hello")

    [row] = await wait_for(lambda: steps(db, "hello", "ran"))

    assert row["message_id"] == row["current_id"] == message.message_id
    await wait_for(lambda: _equal(counts(settings), (0, 0, 0)))


async def _equal(value, expected) -> bool:
    return await value == expected


async def test_a_failing_actor_is_retried_with_backoff_then_dead_lettered(
    start_loop_worker, db, settings
) -> None:
    start_loop_worker()
    with capture_logs() as logs:
        message = await asyncio.to_thread(send, settings, "test_loop_fails", "doomed")
        await wait_for(lambda: _equal(counts(settings), (0, 0, 1)), timeout=30)
        lines = [json.loads(line) for line in logs.since(0).splitlines()]

    rows = await steps(db, "doomed", "ran")
    assert len(rows) == settings.max_retries + 1
    gaps = [
        (later["at"] - earlier["at"]).total_seconds()
        for earlier, later in zip(rows, rows[1:], strict=False)
    ]
    assert all(gap >= settings.min_backoff_ms / 1000 * 0.5 for gap in gaps), gaps
    reason = await db.fetchval(
        "SELECT error FROM dead_letter_reasons WHERE message_id = $1", message.message_id
    )
    assert reason == "RuntimeError: boom"
    [dead] = [line for line in lines if line.get("event") == "message dead-lettered"]
    assert (dead["message_id"], dead["reason"], dead["retries"]) == (
        message.message_id,
        "RuntimeError",
        settings.max_retries + 1,
    )


async def test_a_permanent_error_is_dead_lettered_without_retrying(
    start_loop_worker, db, settings
) -> None:
    start_loop_worker()
    message = await asyncio.to_thread(send, settings, "test_loop_fails_permanently", "hopeless")

    await wait_for(lambda: _equal(counts(settings), (0, 0, 1)), timeout=30)

    assert len(await steps(db, "hopeless", "ran")) == 1
    reason = await db.fetchval(
        "SELECT error FROM dead_letter_reasons WHERE message_id = $1", message.message_id
    )
    assert reason == "PermanentError: cannot ever work"


async def test_an_actor_past_its_time_limit_is_cancelled_and_fails(
    start_loop_worker, db, settings
) -> None:
    start_loop_worker(settings_override=settings.model_copy(update={"max_retries": 0}))
    with capture_logs() as logs:
        await asyncio.to_thread(send, settings, "test_loop_overruns", "slow")
        await wait_for(lambda: _equal(counts(settings), (0, 0, 1)), timeout=30)
        lines = [json.loads(line) for line in logs.since(0).splitlines()]

    assert len(await steps(db, "slow", "cancelled")) == 1
    [dead] = [line for line in lines if line.get("event") == "message dead-lettered"]
    assert dead["reason"] == "TimeLimitExceeded"


async def test_worker_threads_bound_how_many_actors_run_at_once(
    start_loop_worker, db, settings
) -> None:
    start_loop_worker(threads=2)
    for index in range(4):
        await asyncio.to_thread(send, settings, "test_loop_blocks", f"bounded-{index}")
    # All four reach the worker (its prefetch is four); two of them run.
    await wait_for(lambda: _equal(counts(settings), (0, 0, 0)))
    await wait_for(lambda: _count(db, "started", 2))
    assert RUNNING["now"] == 2

    for index in range(4):
        gate(f"bounded-{index}").set()
    await wait_for(lambda: _count(db, "finished", 4))
    assert RUNNING["most"] == 2


async def _count(db, step: str, expected: int) -> bool:
    found = await db.fetchval("SELECT count(*) FROM loop_attempts WHERE step = $1", step)
    return found == expected


async def test_stop_lets_a_running_actor_finish_and_acknowledges_it(
    start_loop_worker, db, settings
) -> None:
    system = start_loop_worker()
    await asyncio.to_thread(send, settings, "test_loop_blocks", "finish-me")
    await wait_for(lambda: steps(db, "finish-me", "started"))

    stopping = asyncio.create_task(asyncio.to_thread(system.worker.stop))
    gate("finish-me").set()
    await stopping

    assert len(await steps(db, "finish-me", "finished")) == 1
    assert await counts(settings) == (0, 0, 0)  # acked: the close requeued nothing
    assert system.resources._pool is None  # ResourcesLifecycle closed the pool


async def test_an_actor_cut_short_by_the_shutdown_timeout_comes_back(
    start_loop_worker, db, settings
) -> None:
    system = start_loop_worker()
    await asyncio.to_thread(send, settings, "test_loop_blocks", "cut-short")
    await wait_for(lambda: steps(db, "cut-short", "started"))

    await asyncio.to_thread(system.worker.stop, 100)

    assert await counts(settings) == (1, 0, 0)
    gate("cut-short").set()
    start_loop_worker()
    await wait_for(lambda: steps(db, "cut-short", "finished"))
    await wait_for(lambda: _equal(counts(settings), (0, 0, 0)))


async def test_a_lost_connection_redelivers_what_was_not_acknowledged(
    start_loop_worker, db, settings
) -> None:
    proxy = TcpProxy("127.0.0.1", 5672)
    port = await proxy.start()
    through_proxy = settings.model_copy(
        update={"broker_url": SecretStr(f"amqp://guest:guest@127.0.0.1:{port}/%2F?heartbeat=30")}
    )
    start_loop_worker(settings_override=through_proxy)
    try:
        await asyncio.to_thread(send, settings, "test_loop_blocks", "in-flight")
        await wait_for(lambda: steps(db, "in-flight", "started"))

        await proxy.cut()
        gate("in-flight").set()  # it finishes, but its ack has no channel left to go on
        await wait_for(lambda: steps(db, "in-flight", "finished"))
        await proxy.restore()

        # RabbitMQ requeued it when the connection dropped; the worker connects again.
        started = await wait_for(lambda: _at_least(steps(db, "in-flight", "started"), 2))
        assert {row["message_id"] for row in started} == {started[0]["message_id"]}
        await wait_for(lambda: _at_least(steps(db, "in-flight", "finished"), 2))
        await wait_for(lambda: _equal(counts(settings), (0, 0, 0)))
    finally:
        await proxy.cut()


async def _at_least(rows, count: int) -> list:
    found = await rows
    return found if len(found) >= count else []


async def _outbox_rows(db, label: str) -> list:
    return await db.fetch(
        "SELECT message_id::text, published_at, publish_attempts FROM outbox "
        "WHERE args->>0 LIKE $1 ORDER BY id",
        f"{label}-%",
    )


async def _all_marked(db, label: str, expected: int) -> list:
    rows = await _outbox_rows(db, label)
    marked = [row for row in rows if row["published_at"] is not None]
    return rows if len(rows) == expected and len(marked) == expected else []


async def test_a_follow_up_for_an_actor_it_consumes_runs_here_and_is_marked_published(
    start_loop_worker, db, settings
) -> None:
    # A publisher that confirms nothing: the follow-up can only have run in this worker.
    start_loop_worker(publisher=LeaveToRelay())
    await asyncio.to_thread(send, settings, "test_loop_follows_up", "here", "test_loop_records")

    [ran] = await wait_for(lambda: steps(db, "here-0", "ran"))
    [row] = await wait_for(lambda: _all_marked(db, "here", 1))

    assert ran["message_id"] == ran["current_id"] == row["message_id"]
    assert row["publish_attempts"] == 1
    assert await counts(settings) == (0, 0, 0)


async def test_what_a_message_committed_reaches_its_follow_ups_here_and_no_other_message(
    start_loop_worker, db, settings
) -> None:
    start_loop_worker(publisher=LeaveToRelay())
    await asyncio.to_thread(send, settings, "test_loop_leaves_committed", "left")
    await wait_for(lambda: steps(db, "left", "found"))
    await asyncio.to_thread(send, settings, "test_loop_reads_committed", "left")
    await wait_for(lambda: steps(db, "left", "missing"))
    assert len(await steps(db, "left", "found")) == 1


async def test_a_message_runs_only_a_few_follow_ups_here_and_publishes_the_rest(
    start_loop_worker, db, settings
) -> None:
    start_loop_worker(publisher=LeaveToRelay())
    await asyncio.to_thread(send, settings, "test_loop_follows_up", "many", "test_loop_records", 6)

    await wait_for(lambda: _count(db, "ran", LOCAL_RUNS_PER_MESSAGE))
    rows = await wait_for(lambda: _marked_count(db, "many", LOCAL_RUNS_PER_MESSAGE))

    assert len(rows) == 6
    # The two left over went to the publisher, which did not confirm them: the relay's now.
    left = [row for row in rows if row["published_at"] is None]
    assert [row["publish_attempts"] for row in left] == [1, 1]


async def _marked_count(db, label: str, expected: int) -> list:
    rows = await _outbox_rows(db, label)
    marked = [row for row in rows if row["published_at"] is not None]
    return rows if len(marked) == expected else []


async def test_a_follow_up_for_an_actor_it_does_not_consume_is_published(
    start_loop_worker, db, settings
) -> None:
    start_loop_worker(publisher=LeaveToRelay())
    await asyncio.to_thread(send, settings, "test_loop_follows_up", "away", "not_this_workers")

    [row] = await wait_for(lambda: _attempted(db, "away"))

    assert row["published_at"] is None


async def _attempted(db, label: str) -> list:
    rows = await _outbox_rows(db, label)
    return rows if rows and all(row["publish_attempts"] for row in rows) else []


async def test_a_failing_follow_up_is_retried_through_rabbitmq_then_dead_lettered(
    start_loop_worker, db, settings
) -> None:
    start_loop_worker(settings_override=settings.model_copy(update={"max_retries": 1}))
    await asyncio.to_thread(send, settings, "test_loop_follows_up", "fragile", "test_loop_fails")

    await wait_for(lambda: _equal(counts(settings), (0, 0, 1)), timeout=30)

    ran = await steps(db, "fragile-0", "ran")
    [row] = await _outbox_rows(db, "fragile")
    assert len(ran) == 2 and {attempt["message_id"] for attempt in ran} == {row["message_id"]}
    assert row["published_at"] is not None  # handed to RabbitMQ: the relay leaves it
    reason = await db.fetchval(
        "SELECT error FROM dead_letter_reasons WHERE message_id = $1", row["message_id"]
    )
    assert reason == "RuntimeError: boom"


async def test_a_follow_up_cut_short_by_a_stop_is_left_to_the_relay(
    start_loop_worker, db, settings
) -> None:
    first = start_loop_worker()
    await asyncio.to_thread(send, settings, "test_loop_follows_up", "orphan", "test_loop_blocks")
    await wait_for(lambda: steps(db, "orphan-0", "started"))

    await asyncio.to_thread(first.worker.stop, 100)

    [row] = await _outbox_rows(db, "orphan")
    assert row["published_at"] is None
    assert await counts(settings) == (0, 0, 0)  # the message that wrote it was acked
    gate("orphan-0").set()
    start_loop_worker()
    pool = await create_pool(settings.require_database_url(), max_size=1)
    publisher = AmqpPublisher(settings.require_broker_url(), settings.queue_prefix)
    try:
        assert await relay_once(pool, publisher, grace_s=0) == 1
    finally:
        await publisher.close()
        await pool.close()
    await wait_for(lambda: steps(db, "orphan-0", "finished"))


async def test_dramatiqs_prometheus_series_count_what_the_worker_did(
    start_loop_worker, db, settings, monkeypatch, tmp_path
) -> None:
    # The middleware points the multiprocess directory at its own; put the variables back after.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("prometheus_multiproc_dir", str(tmp_path))
    system = start_loop_worker(metrics=True)
    prometheus = next(m for m in system.broker.middleware if isinstance(m, Prometheus))
    await asyncio.to_thread(send, settings, "test_loop_records", "counted")
    await asyncio.to_thread(send, settings, "test_loop_fails_permanently", "counted-dead")
    await wait_for(lambda: _equal(counts(settings), (0, 0, 1)), timeout=30)

    def series(metric, suffix: str = "") -> dict[str, float]:
        """The metric's non-zero samples by actor (every actor's series exist from the start)."""
        return {
            sample.labels["actor_name"]: sample.value
            for family in metric.collect()
            for sample in family.samples
            if sample.name == family.name + suffix and sample.value
        }

    await wait_for(lambda: _true(len(series(prometheus.total_messages, "_total")) == 2))
    assert series(prometheus.total_messages, "_total") == {
        "test_loop_records": 1,
        "test_loop_fails_permanently": 1,
    }
    assert series(prometheus.total_errored_messages, "_total") == {"test_loop_fails_permanently": 1}
    assert series(prometheus.total_rejected_messages, "_total") == {
        "test_loop_fails_permanently": 1
    }
    assert series(prometheus.message_durations, "_count") == {
        "test_loop_records": 1,
        "test_loop_fails_permanently": 1,
    }
    assert series(prometheus.inprogress_messages) == {}


async def _true(value: bool) -> bool:
    return value


async def test_unreadable_messages_and_unknown_actors_go_to_the_dead_letters(
    start_loop_worker, settings
) -> None:
    start_loop_worker()
    await asyncio.to_thread(publish, settings.queue_prefix + QUEUE, b"not a dramatiq message")
    await asyncio.to_thread(send, settings, "test_loop_nobody", "lost?")

    await wait_for(lambda: _equal(counts(settings), (0, 0, 2)))


class Failure(Exception):
    pass


EXCEPTIONS: dict[str, Callable[[], BaseException]] = {
    "error": lambda: Failure("boom"),
    "permanent": lambda: PermanentError("never"),
    "retry in 1234 ms": lambda: Retry(delay=1234),
    "retry": lambda: Retry(),
}


@hypothesis_settings(max_examples=60, deadline=None)
@given(
    attempts=st.integers(0, 8),
    max_retries=st.integers(0, 8),
    kind=st.sampled_from(sorted(EXCEPTIONS)),
    colmena_rule=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_the_retry_policy_decides_as_dramatiqs_retries_middleware(
    attempts: int, max_retries: int, kind: str, colmena_rule: bool, seed: int
) -> None:
    """Against Dramatiq's Retries itself: colmena's stack (retry_when) or a bare max_retries."""
    base = Settings(_env_file=None, max_retries=max_retries, min_backoff_ms=100)
    if colmena_rule:
        broker = create_broker(base)
        retries = next(m for m in broker.middleware if isinstance(m, Retries))
    else:
        retries = Retries(max_retries=max_retries, min_backoff=100, max_backoff=5_000)
        broker = StubBroker(middleware=[retries])
    target = dramatiq.Actor(
        lambda: None,
        broker=broker,
        actor_name="target",
        queue_name="q",
        priority=0,
        options={"throws": (PermanentError,)},
    )
    options = {"retries": attempts} if attempts else {}
    theirs = MessageProxy(target.message_with_options(**options))
    ours = theirs._message.copy()
    delays: list[int | None] = []
    broker.enqueue = lambda message, *, delay=None: delays.append(delay)  # type: ignore[method-assign]
    exception = EXCEPTIONS[kind]()

    random.seed(seed)
    try:
        raise exception
    except BaseException:
        retries.after_process_message(broker, theirs, exception=exception)
    random.seed(seed)
    outcome = after_failure(ours, target, retries, exception, now_ms=0)

    if theirs.failed:
        assert isinstance(outcome, GiveUp)
        assert outcome.exhausted == (kind != "permanent")
    else:
        assert outcome == RetryLater(delays[0])
    assert ours.options.get("retries") == theirs.options.get("retries")


def _start_colmena_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """`colmena worker` in a session (a process group) of its own, consuming once it returns."""
    env = colmena_env(settings, COLMENA_METRICS_PORT=str(free_port()))
    worker = subprocess.Popen(
        [sys.executable, "-m", "colmena", "worker", "--queues", "payments"]
        + ["--processes", "1", "--threads", "2"],
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        asyncio.run(
            wait_for(lambda: _logged(log_path, "worker consuming on the event loop"), timeout=60)
        )
    except BaseException:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        raise
    return worker


def test_colmena_worker_runs_the_loop_worker_and_stops_on_sigterm(
    settings: Settings, tmp_path: Path
) -> None:
    log_path = tmp_path / "worker.log"
    worker = _start_colmena_worker(settings, log_path)
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)
    assert worker.returncode == 0, log_path.read_text()
    assert "worker stopped" in log_path.read_text()


def test_a_sigterm_to_the_whole_process_group_ends_every_process_of_it(
    settings: Settings, tmp_path: Path
) -> None:
    """The worker process gets that SIGTERM twice (directly, and forwarded by Dramatiq's main
    process), which Dramatiq's CLI takes for "exit now" wherever the process is: it must exit
    rather than wait forever on its event loop's thread."""
    log_path = tmp_path / "worker.log"
    worker = _start_colmena_worker(settings, log_path)
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        # Dramatiq's main process joins its worker processes before it exits.
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        pytest.fail(f"colmena worker still ran 30 s after the SIGTERM:\n{log_path.read_text()}")


async def _logged(path: Path, event: str) -> bool:
    return f'"event": "{event}"' in path.read_text()
