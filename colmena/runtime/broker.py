"""Builds the Dramatiq broker and declares colmena's actors on it.

Actor modules register plain `async def` functions with `colmena.runtime.registry.actor`;
`build_broker` declares the specs it is handed on a fresh broker, under the configured queue
prefix. That is what lets each test (and each deployment sharing a RabbitMQ) use its own queue
names, and lets `colmena dev` swap RabbitMQ for the StubBroker.

Every actor receives the process's `Resources` (pool, publisher, settings) as its first argument,
then the message's arguments, and runs on Dramatiq's event-loop thread with `message_id` and
`actor` bound in the log context.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import dramatiq
import structlog
from dramatiq.asyncio import EventLoopThread, get_event_loop_thread, set_event_loop_thread
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name, xq_name
from dramatiq.errors import Retry
from dramatiq.middleware import (
    AgeLimit,
    AsyncIO,
    CurrentMessage,
    Middleware,
    Retries,
    TimeLimit,
)

from colmena.config import Settings
from colmena.config.metrics import DEAD_LETTERS
from colmena.config.settings import BrokerUrls, amqp_urls
from colmena.errors import PermanentError, TransientError, is_permanent
from colmena.runtime.queues import queue_declarations, queue_name
from colmena.runtime.registry import ActorSpec
from colmena.store.deadletters import record_dead_letter
from colmena.store.outbox import mark_consumed

if TYPE_CHECKING:
    from colmena.runtime.resources import Resources

log = structlog.get_logger(__name__)


class DaemonAsyncIO(AsyncIO):
    """Dramatiq's AsyncIO middleware, its event-loop thread a daemon.

    On a second SIGTERM Dramatiq's CLI exits a worker process wherever it is, skipping the
    worker's shutdown, and a SIGTERM sent to the process group arrives twice (directly, and
    forwarded by the CLI's main process). A loop thread that is not a daemon then keeps the
    process alive until a SIGKILL; a daemon ends with it, and the broker redelivers what the
    process held.
    """

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        thread = EventLoopThread(self.logger)
        thread.daemon = True
        thread.start(timeout=1.0)
        set_event_loop_thread(thread)


class ColmenaRabbitmqBroker(RabbitmqBroker):
    """RabbitmqBroker whose queue arguments come from `queue_declarations` (quorum optional)."""

    def __init__(self, *, quorum: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        url = kwargs.get("url")
        # The loop worker dials the nodes itself, in this order.
        self.urls: list[str] = [url] if isinstance(url, str) else list(url or [])
        self.quorum = quorum

    def _arguments(self, queue: str) -> dict[str, Any]:
        return dict(queue_declarations(queue, quorum=self.quorum))[queue]

    def _declare_queue(self, queue_name: str) -> Any:
        return self.channel.queue_declare(
            queue=queue_name, durable=True, arguments=self._arguments(queue_name)
        )

    def _declare_dq_queue(self, queue_name: str) -> Any:
        name = dq_name(queue_name)
        args = dict(queue_declarations(queue_name, quorum=self.quorum))[name]
        return self.channel.queue_declare(queue=name, durable=True, arguments=args)

    def _declare_xq_queue(self, queue_name: str) -> Any:
        name = xq_name(queue_name)
        args = dict(queue_declarations(queue_name, quorum=self.quorum))[name]
        return self.channel.queue_declare(queue=name, durable=True, arguments=args)


class DeadLetterAlarm(Middleware):
    """Counts and logs every message that leaves for the dead letters, so operators see it.

    The log line is at ERROR and says why: the actor, the exception and its message, and the
    error's `hint` (what to configure or fix) when it has one. The exception is only known to
    `after_process_message` (which Dramatiq calls before Retries decides, after-hooks run in
    reverse order); it is kept per message id until the ack (retried or done) or the nack (dead)
    that follows it.
    """

    def __init__(self) -> None:
        self._failures: dict[str, BaseException] = {}
        self._lock = threading.Lock()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is not None:
            with self._lock:
                self._failures[message.message_id] = exception

    def after_ack(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        with self._lock:
            self._failures.pop(message.message_id, None)

    def after_nack(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        with self._lock:
            exception = self._failures.pop(message.message_id, None)
        report_dead_letter(message, exception)


def report_dead_letter(
    message: dramatiq.Message[Any] | MessageProxy, exception: BaseException | None
) -> None:
    """Count a message leaving for the dead letters and log why, at ERROR (`exception` is None
    for one skipped before it ran: too old, or for an actor this process does not know)."""
    DEAD_LETTERS.labels(queue=message.queue_name, actor=message.actor_name).inc()
    reason = "skipped before it ran" if exception is None else type(exception).__name__
    log.error(
        "message dead-lettered",
        message_id=message.message_id,
        actor=message.actor_name,
        queue=message.queue_name,
        retries=message.options.get("retries", 0),
        reason=reason,
        error=None if exception is None else str(exception),
        hint=getattr(exception, "hint", None),
    )


class ResourcesLifecycle(Middleware):
    """Closes the process's pool and publisher on the event loop that opened them."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        loop_thread = get_event_loop_thread()
        if loop_thread is not None and loop_thread.loop.is_running():
            loop_thread.run_coroutine(self.resources.close())


def _retry_when(max_retries: int) -> Callable[[int, BaseException], bool]:
    def retry_when(retries: int, exception: BaseException) -> bool:
        return retries < max_retries and not is_permanent(exception)

    return retry_when


def _middleware(settings: Settings, *, metrics: bool) -> list[Middleware]:
    """colmena's stack. Dramatiq's Callbacks, Pipelines and ShutdownNotifications are left out:
    no actor of ours composes messages (follow-ups go through the outbox) or asks to be
    interrupted at shutdown, so their options are refused when an actor is declared, and the
    loop worker honours every option this stack accepts."""
    stack: list[Middleware] = [
        AgeLimit(),
        TimeLimit(time_limit=settings.time_limit_ms),
        Retries(
            min_backoff=settings.min_backoff_ms,
            max_backoff=settings.max_backoff_ms,
            retry_when=_retry_when(settings.max_retries),
        ),
        DaemonAsyncIO(),
        CurrentMessage(),
        DeadLetterAlarm(),
    ]
    if metrics:
        from dramatiq.middleware.prometheus import Prometheus

        stack.append(Prometheus())
    return stack


def _last_attempt(message: dramatiq.Message, exc: Exception, max_retries: int) -> bool:
    return is_permanent(exc) or message.options.get("retries", 0) >= max_retries


async def _note_dead_letter(
    resources: Resources, message: dramatiq.Message, exc: Exception
) -> None:
    """Keep why a message is about to be dead-lettered: RabbitMQ keeps only its body."""
    try:
        await record_dead_letter(
            resources.pool,
            message_id=message.message_id,
            actor=message.actor_name,
            error=f"{type(exc).__name__}: {exc}",
        )
    except (
        Exception
    ) as note_error:  # the dead letter itself must not be lost to a bookkeeping failure
        log.warning("could not record the dead-letter reason", error=type(note_error).__name__)


class BoundActor:
    """An actor's coroutine bound to the process's resources, runnable two ways.

    The loop worker (`colmena.runtime.loop_worker`, what `colmena worker` runs) awaits `run` on
    the event loop. Dramatiq's own worker threads (`colmena dev`, tests) call the object: it
    hands the coroutine to the event-loop thread itself (rather than letting Dramatiq wrap an
    async function) so that the message id read there reaches the coroutine's log context.
    """

    def __init__(self, spec: ActorSpec, resources: Resources) -> None:
        self.spec = spec
        self.resources = resources
        self.__name__ = spec.name

    async def run(
        self, message: dramatiq.Message[Any] | None, args: Any, kwargs: dict[str, Any]
    ) -> Any:
        """Run the actor for `message`. Both workers await this in a task of its own, so the
        log context bound here is the task's alone and needs no reset (structlog's
        `bound_contextvars` costs five times `bind_contextvars`)."""
        resources = self.resources
        message_id = message.message_id if message is not None else None
        structlog.contextvars.bind_contextvars(message_id=message_id, actor=self.spec.name)
        await resources.start()
        try:
            result = await self.spec.fn(resources, *args, **kwargs)
        except Exception as exc:
            if message is not None and _last_attempt(message, exc, resources.settings.max_retries):
                await _note_dead_letter(resources, message, exc)
            if isinstance(exc, TransientError) and exc.retry_after_s is not None:
                # Both workers' retry rules (Dramatiq's Retries) take a Retry's delay.
                raise Retry(str(exc), delay=math.ceil(exc.retry_after_s * 1000)) from exc
            raise
        if resources.track_consumption and message_id is not None:
            await mark_consumed(resources.pool, message_id)
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        loop_thread = get_event_loop_thread()
        if loop_thread is None:
            raise RuntimeError("the AsyncIO middleware is not running on this broker")
        return loop_thread.run_coroutine(
            self.run(CurrentMessage.get_current_message(), args, kwargs)
        )


def create_broker(
    settings: Settings,
    *,
    broker_url: BrokerUrls | None = None,
    metrics: bool = False,
    quorum: bool = False,
) -> dramatiq.Broker:
    """A broker with colmena's middleware: RabbitMQ (publisher confirms on) when a URL is given,
    else the in-process StubBroker.

    `broker_url` may name every node of a cluster: each connection Dramatiq opens (one per
    consumer and per publishing thread) dials them in order, so a consumer whose node died
    reconnects, after Dramatiq's restart delay, to the first node that answers.
    """
    middleware = _middleware(settings, metrics=metrics)
    if broker_url is not None:
        return ColmenaRabbitmqBroker(
            url=amqp_urls(broker_url), confirm_delivery=True, middleware=middleware, quorum=quorum
        )
    return StubBroker(middleware=middleware)


def declare_actors(
    broker: dramatiq.Broker, settings: Settings, resources: Resources, actors: Iterable[ActorSpec]
) -> None:
    """Declare `actors` under the queue prefix, bound to `resources`.

    An option no middleware of this broker knows is refused, as `dramatiq.actor` refuses it: a
    misspelt `max_retires` would otherwise be silently ignored. The broker is also made
    Dramatiq's global broker, as the worker CLI expects. Whoever runs a bare `dramatiq.Worker`
    on it (dev mode, tests) emits `process_boot` first, as Dramatiq's CLI does, or TimeLimit
    never arms.
    """
    broker.add_middleware(ResourcesLifecycle(resources))
    for spec in actors:
        unknown = sorted(set(spec.options) - broker.actor_options)
        if unknown:
            raise ValueError(f"actor {spec.name!r} has unknown option(s) {', '.join(unknown)}")
        dramatiq.Actor(
            BoundActor(spec, resources),
            broker=broker,
            actor_name=spec.name,
            queue_name=queue_name(settings.queue_prefix, spec.queue),
            priority=0,
            options={"throws": (PermanentError,), **spec.options},
        )
    dramatiq.set_broker(broker)


def build_broker(
    settings: Settings,
    resources: Resources,
    actors: Iterable[ActorSpec],
    *,
    broker_url: BrokerUrls | None = None,
    metrics: bool = False,
    quorum: bool = False,
) -> dramatiq.Broker:
    """`create_broker` then `declare_actors`, for callers whose publisher needs no broker."""
    broker = create_broker(settings, broker_url=broker_url, metrics=metrics, quorum=quorum)
    declare_actors(broker, settings, resources, actors)
    return broker
