"""Putting outbox rows on the broker.

`AmqpPublisher` pipelines: it publishes a whole batch on one confirm-mode channel and then waits
for all the confirms together, instead of one round trip per message as `actor.send()` with
`confirm_delivery=True` does. `BrokerPublisher` hands messages to an in-process broker (the
StubBroker of `colmena dev` and of tests). Both encode exactly what Dramatiq's own `send` would,
so workers cannot tell how a message arrived.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Protocol

import aio_pika
import dramatiq
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection

from colmena.runtime.queues import queue_declarations, queue_name
from colmena.store.outbox import OutboxMessage

log = structlog.get_logger(__name__)


def to_dramatiq_message(row: OutboxMessage, prefix: str) -> dramatiq.Message:
    """The Dramatiq message for an outbox row; its id is the row's, so redeliveries share it."""
    return dramatiq.Message(
        queue_name=queue_name(prefix, row.queue),
        actor_name=row.actor,
        args=tuple(row.args),
        kwargs=row.kwargs,
        options={},
        message_id=row.message_id,
        message_timestamp=int(time.time() * 1000),
    )


class Publisher(Protocol):
    async def publish_many(self, rows: Sequence[OutboxMessage]) -> list[bool]:
        """Publish each row; the result says, per row, whether the broker confirmed it."""

    async def check(self) -> bool:
        """Whether the broker answers now (readiness)."""

    async def close(self) -> None: ...


class BrokerPublisher:
    """Publishes through an in-process Dramatiq broker (StubBroker)."""

    def __init__(self, broker: dramatiq.Broker, prefix: str) -> None:
        self.broker = broker
        self.prefix = prefix

    async def publish_many(self, rows: Sequence[OutboxMessage]) -> list[bool]:
        for row in rows:
            self.broker.enqueue(to_dramatiq_message(row, self.prefix))
        return [True] * len(rows)

    async def check(self) -> bool:
        return True

    async def close(self) -> None:
        return None


class LeaveToRelay:
    """For an operator command that cannot reach the broker: the in-process broker of
    `colmena dev` lives in the dev process. It confirms nothing, so the rows stay in the outbox
    and the dev process's relay publishes them within COLMENA_RELAY_GRACE_S."""

    async def publish_many(self, rows: Sequence[OutboxMessage]) -> list[bool]:
        return [False] * len(rows)

    async def check(self) -> bool:
        return True

    async def close(self) -> None:
        return None


class AmqpPublisher:
    """Pipelined, confirmed publishing to RabbitMQ over one connection per process."""

    def __init__(
        self, url: str, prefix: str, *, quorum: bool = False, connect_timeout: float = 5.0
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.quorum = quorum
        self.connect_timeout = connect_timeout
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._declared: set[str] = set()
        self._lock = asyncio.Lock()

    async def _open_channel(self) -> AbstractChannel:
        async with self._lock:
            if self._channel is None or self._channel.is_closed:
                await self._reset()
                self._connection = await aio_pika.connect(self.url, timeout=self.connect_timeout)
                self._channel = await self._connection.channel(publisher_confirms=True)
                self._declared.clear()
            return self._channel

    async def _declare(self, channel: AbstractChannel, name: str) -> None:
        if name in self._declared:
            return
        for queue, arguments in queue_declarations(name, quorum=self.quorum):
            await channel.declare_queue(queue, durable=True, arguments=arguments)
        self._declared.add(name)

    async def publish_many(self, rows: Sequence[OutboxMessage]) -> list[bool]:
        if not rows:
            return []
        try:
            channel = await self._open_channel()
            messages = [to_dramatiq_message(row, self.prefix) for row in rows]
            for name in {message.queue_name for message in messages}:
                await self._declare(channel, name)
            outcomes = await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(
                            body=message.encode(),
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            message_id=message.message_id,
                        ),
                        routing_key=message.queue_name,
                        mandatory=True,
                    )
                    for message in messages
                ),
                return_exceptions=True,
            )
        except (TimeoutError, aio_pika.exceptions.AMQPError, OSError) as exc:
            log.warning(
                "broker unreachable, rows stay in the outbox",
                error=type(exc).__name__,
                count=len(rows),
            )
            await self._reset()
            return [False] * len(rows)
        results = [not isinstance(outcome, BaseException) for outcome in outcomes]
        if not all(results):
            await self._reset()
        return results

    async def check(self) -> bool:
        try:
            await self._open_channel()
        except (TimeoutError, aio_pika.exceptions.AMQPError, OSError):
            return False
        return True

    async def _reset(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except (aio_pika.exceptions.AMQPError, OSError):
                pass

    async def close(self) -> None:
        async with self._lock:
            await self._reset()
