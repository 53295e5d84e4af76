"""`colmena worker`'s worker: Dramatiq's messages, queues and rules, consumed and run on the
event loop.

Dramatiq's own Worker moves every message across three threads: a consumer thread reads it, a
worker thread runs the middleware and calls the actor, and colmena's actors (all `async def`)
run on the event-loop thread while the worker thread waits on a future; the ack then goes back
to the consumer thread. On two cores those hand-offs cost more than a small actor does
(bench/workers.py). Here one thread does it all: `LoopConsumer` reads on the event loop, each
message becomes a task that awaits its actor, and the task acknowledges it.

What Dramatiq's worker guarantees, this one keeps:
- Messages and queues are Dramatiq's (Q, Q.DQ, Q.XQ, same arguments), so producers,
  `colmena dlq` and Dramatiq's own threads (`colmena dev`, tests) see no difference.
- A message is acked only after its actor returned, or after the copy that retries it was
  confirmed on Q.DQ. A dead one is nacked (RabbitMQ dead-letters it to Q.XQ) after the
  DeadLetterAlarm's count and line. Whatever is unacked when a process dies is redelivered.
- Retries follow `retry_policy.after_failure` (Dramatiq's Retries rules). Delayed messages
  wait in memory, unacked, until due; they go to Q, confirmed, before their Q.DQ delivery is
  acked.
- Time limits are TimeLimit's (or the actor's or message's `time_limit`), checked once a
  second as TimeLimit checks them: an actor past its limit is cancelled and fails with
  TimeLimitExceeded, retried like any error. AgeLimit's `max_age` dead-letters a message too
  old to run.
- Dramatiq's Prometheus series keep their names (`colmena.runtime.worker_metrics`).
- `worker_threads` bounds how many actors run at once (the rest wait, unacked, in arrival
  order); each queue's prefetch is Dramatiq's (`dramatiq_queue_prefetch`, which
  `colmena worker` sets).
- An outbox row an actor's transaction wrote for an actor this worker consumes is run here,
  in the same task once the message is acked, rather than published and consumed again
  (`colmena.runtime.follow_ups`); a failed one goes to RabbitMQ as a retry or dead letter, as
  a delivered one would. The row is marked published only then, so the relay is the backstop.
- Shutdown stops consuming, lets running actors finish (up to the CLI's shutdown timeout),
  closes the resources (ResourcesLifecycle), then the connection, so RabbitMQ requeues what
  was prefetched, waiting or delayed, then the loop (AsyncIO middleware).

The worker's own CPU per message is about 100 us on the project's machine (bench/workers.py).
A timer per message (asyncio.timeout: about 10 us with the timer heap's upkeep) and a
semaphore (2 us) would add a tenth to that, hence the once-a-second tick for time limits and a
plain count of running actors for the bound.

It has Dramatiq's Worker interface (`start`, `stop`), so Dramatiq's CLI runs it
(`colmena.runtime.worker_cli`) and keeps process management, signals and the metrics server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
from collections import deque
from typing import Any, Protocol, TypeVar, cast

import dramatiq
import pika.exceptions
import structlog
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.common import current_millis, dq_name, q_name, xq_name
from dramatiq.errors import DecodeError, RateLimitExceeded, Retry
from dramatiq.middleware import AgeLimit, CurrentMessage, Middleware, Retries, TimeLimit
from dramatiq.middleware.prometheus import Prometheus
from dramatiq.middleware.time_limit import TimeLimitExceeded
from dramatiq.worker import CONSUMER_RESTART_DELAY_SECS, DELAY_QUEUE_PREFETCH, QUEUE_PREFETCH

from colmena.config.metrics import OUTBOX_PUBLISHED
from colmena.runtime.broker import BoundActor, ColmenaRabbitmqBroker, report_dead_letter
from colmena.runtime.broker_nodes import BrokerNodes, node_label
from colmena.runtime.confirms import BrokerUnavailable, ConfirmedChannel
from colmena.runtime.follow_ups import LocalFollowUps
from colmena.runtime.loop_consumer import Delivery, LoopConsumer, Subscription
from colmena.runtime.outbox import PublishedMarks, publish_now
from colmena.runtime.publisher import to_dramatiq_message
from colmena.runtime.queues import QueueMismatch, queue_declarations
from colmena.runtime.resources import Resources
from colmena.runtime.retry_policy import GiveUp, RetryLater, after_failure
from colmena.runtime.worker_metrics import ActorMeter
from colmena.store.outbox import OutboxMessage

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_S = 10.0
CONFIRM_TIMEOUT_S = 30.0
REPUBLISH_AGAIN_S = 1.0
TICK_S = 1.0  # TimeLimit's own check interval
UNREACHABLE = (TimeoutError, BrokerUnavailable, pika.exceptions.AMQPError, OSError)

M = TypeVar("M", bound=Middleware)
Message = dramatiq.Message[Any]


def _find(broker: dramatiq.Broker, kind: type[M]) -> M | None:
    return next((m for m in broker.middleware if isinstance(m, kind)), None)


class _Handler:
    """What the worker needs of one actor, worked out once."""

    def __init__(
        self, actor: dramatiq.Actor[Any, Any], meter: ActorMeter, time_limit_ms: float, max_age: Any
    ) -> None:
        if not isinstance(actor.fn, BoundActor):
            raise TypeError(f"actor {actor.actor_name!r} was not declared by declare_actors")
        self.actor = actor
        self.bound = actor.fn
        self.meter = meter
        self.time_limit_ms = actor.options.get("time_limit", time_limit_ms)
        self.max_age = actor.options.get("max_age", max_age)

    def time_limit_s(self, message: Message) -> float:
        limit = message.options.get("time_limit") or self.time_limit_ms
        return math.inf if limit is None else limit / 1000

    def too_old(self, message: Message) -> bool:
        max_age = message.options.get("max_age") or self.max_age
        return bool(max_age) and current_millis() - message.message_timestamp >= max_age


class _Source(Protocol):
    """Where a message came from, answered once its actor is done with it."""

    @property
    def answerable(self) -> bool:
        """Whether an answer still counts (if not, the message comes again by itself)."""

    async def done(self) -> None:
        """The message is finished with: its actor returned, or a retry of it is confirmed."""

    async def dead(self, message: Message) -> None:
        """The message goes to the dead letters (Q.XQ)."""


class _Delivered:
    """A message RabbitMQ delivered: acked when done, nacked (dead-lettered by RabbitMQ)."""

    __slots__ = ("delivery",)

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery

    @property
    def answerable(self) -> bool:
        return self.delivery.answerable

    async def done(self) -> None:
        self.delivery.ack()

    async def dead(self, message: Message) -> None:
        self.delivery.nack()


class _FollowUp:
    """An outbox row this worker ran itself (`colmena.runtime.follow_ups`): done is its
    published mark; a dead one is published to Q.XQ first. Unmarked, the relay publishes it."""

    __slots__ = ("marks", "row", "worker")

    def __init__(self, row: OutboxMessage, marks: PublishedMarks, worker: LoopWorker) -> None:
        self.row = row
        self.marks = marks
        self.worker = worker

    @property
    def answerable(self) -> bool:
        return not self.worker.stopping

    async def done(self) -> None:
        await self.marks.add([self.row.id])

    async def dead(self, message: Message) -> None:
        dead = message.copy(queue_name=xq_name(message.queue_name))
        if await self.worker._republish(self, dead):
            await self.done()


class _Republisher:
    """Puts retried and due messages back on RabbitMQ with publisher confirms."""

    def __init__(self, nodes: BrokerNodes) -> None:
        self.nodes = nodes
        self._channel: ConfirmedChannel | None = None
        self._lock = asyncio.Lock()

    async def _open(self) -> ConfirmedChannel:
        async with self._lock:
            if self._channel is not None and self._channel.is_open:
                return self._channel
            for url in self.nodes.in_order():
                try:
                    self._channel = await ConfirmedChannel.open(url, timeout=CONNECT_TIMEOUT_S)
                except UNREACHABLE:
                    continue
                return self._channel
            raise BrokerUnavailable(f"no broker node answers ({self.nodes.labels()})")

    async def publish(self, message: Message) -> bool:
        """Whether RabbitMQ confirmed `message` on its queue."""
        try:
            channel = await self._open()
            confirm = channel.publish(message.queue_name, message.encode(), message.message_id)
            async with asyncio.timeout(CONFIRM_TIMEOUT_S):
                if await asyncio.shield(confirm):
                    return True
        except UNREACHABLE as exc:
            log.warning(
                "could not put a message back, trying again",
                message_id=message.message_id,
                queue=message.queue_name,
                error=str(exc) or type(exc).__name__,
            )
        await self.close()
        return False

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()


class LoopWorker:
    """Consumes the broker's queues and runs their actors on Dramatiq's event-loop thread."""

    def __init__(
        self,
        broker: dramatiq.Broker,
        *,
        queues: set[str] | list[str] | None = None,
        worker_threads: int = 8,
        worker_timeout: int = 1000,
    ) -> None:
        if not isinstance(broker, ColmenaRabbitmqBroker):
            raise TypeError("the loop worker consumes RabbitMQ through a ColmenaRabbitmqBroker")
        self.broker = broker
        self.whitelist = set(queues) if queues else None
        self.concurrency = worker_threads
        self.queue_prefetch = QUEUE_PREFETCH or min(worker_threads * 2, 65535)
        self.delay_prefetch = DELAY_QUEUE_PREFETCH or min(worker_threads * 1000, 65535)
        self.nodes = BrokerNodes(broker.urls)
        self._retries = _find(broker, Retries)
        self._current_message = _find(broker, CurrentMessage)
        self._prometheus = _find(broker, Prometheus)
        self._handlers: dict[str, _Handler] = {}
        self._local_actors: frozenset[str] = frozenset()
        self._meters: dict[tuple[str, str], ActorMeter] = {}
        self._active = 0
        self._waiting: deque[tuple[Delivery, Message, _Handler]] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._held: dict[asyncio.TimerHandle, ActorMeter] = {}
        self._stopping = False
        self._stopped = False
        self._stop_event = asyncio.Event()
        self._republisher = _Republisher(self.nodes)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: concurrent.futures.Future[None] | None = None
        self._consumer: LoopConsumer | None = None
        self._tick: asyncio.TimerHandle | None = None
        self._joiners: list[asyncio.Future[None]] = []

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def queues(self) -> list[str]:
        """The canonical queues this worker consumes (each with its Q.DQ)."""
        declared = self.broker.get_declared_queues()
        chosen = declared if self.whitelist is None else declared & self.whitelist
        return sorted(chosen)

    def start(self) -> None:
        self.broker.emit_before("worker_boot", self)
        loop_thread = get_event_loop_thread()
        if loop_thread is None:
            raise RuntimeError("the AsyncIO middleware is not running on this broker")
        self._loop = loop_thread.loop
        time_limit = _find(self.broker, TimeLimit)
        age_limit = _find(self.broker, AgeLimit)
        for actor in self.broker.actors.values():
            self._handlers[actor.actor_name] = _Handler(
                actor,
                self._meter(actor.queue_name, actor.actor_name),
                time_limit.time_limit if time_limit is not None else math.inf,
                age_limit.max_age if age_limit is not None else None,
            )
        consumed = set(self.queues)
        self._local_actors = frozenset(
            name for name, handler in self._handlers.items() if handler.actor.queue_name in consumed
        )
        self._main = asyncio.run_coroutine_threadsafe(self._consume_forever(), self._loop)
        self.broker.emit_after("worker_boot", self)

    def stop(self, timeout: int = 600_000) -> None:
        """Stop consuming, let running actors finish within `timeout` ms, then close (once:
        a second call returns at once)."""
        if self._stopped:
            return
        self._stopped = True
        if self._loop is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._drain(timeout / 1000), self._loop).result()
        self.broker.emit_before("worker_shutdown", self)
        if self._loop is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result()
        self.broker.emit_after("worker_shutdown", self)
        log.info("worker stopped")

    def join(self) -> None:
        """Block until this worker holds no message (running, waiting or delayed), as
        Dramatiq's Worker.join does: tests wait on it once the queues are empty."""
        if self._loop is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._until_idle(), self._loop).result()

    async def _until_idle(self) -> None:
        if self._tasks or self._waiting or self._held:
            joiner = asyncio.get_running_loop().create_future()
            self._joiners.append(joiner)
            await joiner

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake_joiners()

    def _wake_joiners(self) -> None:
        if self._joiners and not (self._tasks or self._waiting or self._held):
            joiners, self._joiners = self._joiners, []
            for joiner in joiners:
                if not joiner.done():
                    joiner.set_result(None)

    def _meter(self, queue: str, actor: str) -> ActorMeter:
        meter = self._meters.get((queue, actor))
        if meter is None:
            meter = self._meters[(queue, actor)] = ActorMeter(self._prometheus, queue, actor)
        return meter

    def _on_tick(self) -> None:
        """Once a second: cancel actors past their time limit, write the in-progress gauges."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for task, deadline in self._deadlines.items():
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        for meter in self._meters.values():
            meter.flush()
        self._tick = loop.call_later(TICK_S, self._on_tick)

    async def _consume_forever(self) -> None:
        """Consume until stopped, connecting again (to the next node first) when lost."""
        self._on_tick()
        subscriptions = []
        declarations: list[tuple[str, dict[str, Any]]] = []
        for queue in self.queues:
            subscriptions.append(Subscription(queue, self.queue_prefetch))
            subscriptions.append(Subscription(dq_name(queue), self.delay_prefetch))
            declarations += queue_declarations(queue, quorum=self.broker.quorum)
        while not self._stop_event.is_set():
            try:
                await self._consume_until_lost(declarations, subscriptions)
            except Exception:  # a bug must not end consumption silently, as in Dramatiq
                log.exception("consumer failed; starting it again")
            if self._stop_event.is_set():
                return
            try:
                await asyncio.wait_for(self._stop_event.wait(), CONSUMER_RESTART_DELAY_SECS)
            except TimeoutError:
                pass

    async def _consume_until_lost(
        self, declarations: list[tuple[str, dict[str, Any]]], subscriptions: list[Subscription]
    ) -> None:
        url = await self._connect(declarations, subscriptions)
        consumer = self._consumer
        if url is None or consumer is None:
            return
        if self._stop_event.is_set():
            await consumer.close()
            return
        log.info(
            "worker consuming on the event loop",
            node=node_label(url),
            queues=self.queues,
            prefetch=self.queue_prefetch,
            concurrency=self.concurrency,
        )
        reason = await consumer.lost
        self._forget_held()
        if not self._stop_event.is_set():
            self.nodes.lost(url)
            log.warning(
                "consumer connection lost; unacknowledged messages will be redelivered",
                node=node_label(url),
                error=str(reason) or type(reason).__name__,
            )

    async def _connect(
        self, declarations: list[tuple[str, dict[str, Any]]], subscriptions: list[Subscription]
    ) -> str | None:
        async def open_consumer(url: str) -> LoopConsumer:
            return await LoopConsumer.open(
                url, declarations, subscriptions, self._on_delivery, timeout=CONNECT_TIMEOUT_S
            )

        try:
            dialled = await self.nodes.dial(open_consumer, UNREACHABLE)
        except QueueMismatch as exc:
            log.error("queue declaration refused; not consuming", error=str(exc))
            return None
        if dialled is None:
            return None
        url, self._consumer = dialled
        return url

    def _on_delivery(self, delivery: Delivery) -> None:
        if self._stopping:
            return  # unacknowledged: RabbitMQ requeues it when the connection closes
        try:
            message = dramatiq.Message.decode(delivery.body)
        except DecodeError:
            log.exception("undecodable message dead-lettered", queue=delivery.queue)
            delivery.nack()
            return
        options = message.options
        if "eta" in options:
            eta = options["eta"]
            if eta is None:
                del options["eta"]
            else:
                if not isinstance(eta, int | float):
                    log.warning("invalid eta, due now", message_id=message.message_id, eta=eta)
                    eta = options["eta"] = current_millis()
                self._hold(delivery, message, eta)
                return
        handler = self._handlers.get(message.actor_name)
        if handler is None:
            log.error(
                "message for an actor this broker does not declare",
                message_id=message.message_id,
                actor=message.actor_name,
                queue=delivery.queue,
            )
            self._meter(message.queue_name, message.actor_name).rejects.inc()
            report_dead_letter(message, None)
            delivery.nack()
        elif self._active < self.concurrency:
            self._start(delivery, message, handler)
        else:
            self._waiting.append((delivery, message, handler))

    def _spawn(self, coroutine: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._settled)
        return task

    def _start(self, delivery: Delivery, message: Message, handler: _Handler) -> None:
        self._active += 1
        self._spawn(self._process(delivery, message, handler)).add_done_callback(self._finished)

    def _finished(self, _task: asyncio.Task[None]) -> None:
        self._active -= 1
        while self._waiting and self._active < self.concurrency and not self._stopping:
            delivery, message, handler = self._waiting.popleft()
            if delivery.answerable:
                self._start(delivery, message, handler)
        self._wake_joiners()

    def _hold(self, delivery: Delivery, message: Message, eta_ms: float) -> None:
        """Keep a delayed message (unacknowledged) until it is due."""
        meter = self._meter(message.queue_name, message.actor_name)
        meter.delayed.inc()
        delay_s = max(0.0, (eta_ms - current_millis()) / 1000)

        def due() -> None:
            if self._held.pop(handle, None) is None:
                return
            meter.delayed.dec()
            if delivery.answerable:
                ready = message.copy(queue_name=q_name(message.queue_name))
                del ready.options["eta"]
                self._spawn(self._forward(delivery, ready))
            self._wake_joiners()

        handle = asyncio.get_running_loop().call_later(delay_s, due)
        self._held[handle] = meter

    def _forget_held(self) -> None:
        """Drop the delayed and waiting messages of a lost (or closing) connection: RabbitMQ
        has them."""
        held, self._held = self._held, {}
        for handle, meter in held.items():
            handle.cancel()
            meter.delayed.dec()
        self._waiting.clear()
        self._wake_joiners()

    async def _forward(self, delivery: Delivery, ready: Message) -> None:
        if await self._republish(_Delivered(delivery), ready):
            delivery.ack()

    async def _republish(self, source: _Source, message: Message) -> bool:
        """Publish until confirmed; False once `source` can no longer be answered (RabbitMQ
        redelivers it, or the relay publishes its row) or the worker is stopping (the
        connection's close requeues it)."""
        while source.answerable and not self._stopping:
            if await self._republisher.publish(message):
                return True
            await asyncio.sleep(REPUBLISH_AGAIN_S)
        return False

    async def _process(self, delivery: Delivery, message: Message, handler: _Handler) -> None:
        if self._stopping or not delivery.answerable:
            return  # it comes again (requeued by the close, or redelivered)
        if handler.too_old(message):
            log.warning("message exceeded its age limit", message_id=message.message_id)
            handler.meter.rejects.inc()
            report_dead_letter(message, None)
            delivery.nack()
            return
        follow_ups = LocalFollowUps(self._runs_here)
        follow_ups.open()
        exception = await self._run(message, handler)
        if exception is None:
            delivery.ack()
        else:
            await self._failed(_Delivered(delivery), message, handler, exception)
        await self._run_follow_ups(follow_ups, handler.bound.resources)

    def _runs_here(self, row: OutboxMessage) -> bool:
        return not self._stopping and row.actor in self._local_actors

    async def _run(self, message: Message, handler: _Handler) -> BaseException | None:
        """Run the message's actor in this task, within its time limit; what it raised."""
        if self._current_message is not None:
            self._current_message.before_process_message(self.broker, message)
        task = cast(asyncio.Task[None], asyncio.current_task())  # it runs as a task
        limit_s = handler.time_limit_s(message)
        if limit_s != math.inf:
            self._deadlines[task] = asyncio.get_running_loop().time() + limit_s
        meter = handler.meter
        meter.started()
        started = current_millis()
        exception: BaseException | None = None
        try:
            await handler.bound.run(message, message.args, message.kwargs)
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            task.uncancel()
            log.warning("time limit exceeded", message_id=message.message_id, limit_s=limit_s)
            exception = TimeLimitExceeded(f"time limit of {limit_s} s exceeded")
        except BaseException as exc:  # as Dramatiq's worker: SystemExit in an actor is a failure
            exception = exc
        finally:
            self._deadlines.pop(task, None)
            self._expired.discard(task)
            meter.finished(current_millis() - started)
        if exception is not None:
            meter.errors.inc()
        return exception

    async def _run_follow_ups(self, follow_ups: LocalFollowUps, resources: Resources) -> None:
        """Run the outbox rows the message's actor (and these follow-ups in turn) left to this
        worker, each marked published once its actor returned or its failure was handed to
        RabbitMQ (a retry, a dead letter). Stopping, publish what is left."""
        while (row := follow_ups.next()) is not None:
            if self._stopping:
                await publish_now(
                    resources.pool,
                    resources.publisher,
                    [row, *follow_ups.rest()],
                    marks=resources.published_marks,
                )
                return
            handler = self._handlers[row.actor]
            message = to_dramatiq_message(row, resources.settings.queue_prefix)
            source = _FollowUp(row, resources.published_marks, self)
            exception = await self._run(message, handler)
            if exception is None:
                await source.done()
                OUTBOX_PUBLISHED.labels(path="local").inc()
            else:
                await self._failed(source, message, handler, exception)

    async def _failed(
        self, source: _Source, message: Message, handler: _Handler, exception: BaseException
    ) -> None:
        actor = handler.actor
        throws = message.options.get("throws") or actor.options.get("throws")
        if throws and isinstance(exception, throws):
            log.info(
                "actor failed with an expected exception",
                message_id=message.message_id,
                actor=actor.actor_name,
                error=type(exception).__name__,
            )
        elif not isinstance(exception, Retry | RateLimitExceeded):
            log.error(
                "actor failed",
                message_id=message.message_id,
                actor=actor.actor_name,
                exc_info=exception,
            )
        if self._retries is None:
            await source.done()  # without Retries, Dramatiq counts a failed message done
            return
        outcome = after_failure(message, actor, self._retries, exception, current_millis())
        if isinstance(outcome, RetryLater):
            retry = message.copy(
                queue_name=dq_name(message.queue_name),
                options={"eta": current_millis() + outcome.delay_ms},
            )
            log.info(
                "retrying message",
                message_id=message.message_id,
                delay_ms=outcome.delay_ms,
                retries=message.options["retries"],
            )
            if await self._republish(source, retry):
                handler.meter.retries.inc()
                await source.done()
            return
        if outcome.exhausted:
            log.warning("retries exceeded", message_id=message.message_id)
        if outcome.notify is not None and not await self._notify(
            source, message, outcome.notify, outcome
        ):
            return
        handler.meter.rejects.inc()
        report_dead_letter(message, exception)
        await source.dead(message)

    async def _notify(
        self, source: _Source, message: Message, notify: str, outcome: GiveUp
    ) -> bool:
        """Send the `on_retry_exhausted` actor its message, as Retries does; False if it
        could not be published (the failed message then stays unacked, and comes again)."""
        target = self.broker.get_actor(notify)
        notice = target.message(
            message.asdict(), {"retries": outcome.retries, "max_retries": outcome.max_retries}
        )
        return await self._republish(source, notice)

    async def _drain(self, timeout_s: float) -> None:
        """Stop consuming and wait for the running actors (cancelled after `timeout_s`)."""
        self._stopping = True
        self._stop_event.set()
        if self._consumer is not None:
            self._consumer.cancel()
        self._forget_held()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("actors still running at shutdown were cancelled", count=len(pending))
                await asyncio.wait(pending)

    async def _close(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
        for meter in self._meters.values():
            meter.flush()
        await self._republisher.close()
        if self._consumer is not None:
            await self._consumer.close()
        if self._main is not None:
            await asyncio.wrap_future(self._main)
