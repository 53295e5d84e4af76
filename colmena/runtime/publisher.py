"""Putting outbox rows on the broker.

`AmqpPublisher` pipelines: it writes a whole batch on one confirm-mode channel and then waits
for all the confirms together, instead of one round trip per message as `actor.send()` with
`confirm_delivery=True` does. `BrokerPublisher` hands messages to an in-process broker (the
StubBroker of `colmena dev` and of tests). Both encode exactly what Dramatiq's own `send` would,
so workers cannot tell how a message arrived.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Protocol

import dramatiq
import pika.exceptions
import structlog

from colmena.config.settings import BrokerUrls
from colmena.runtime.broker_nodes import BrokerNodes
from colmena.runtime.confirms import BrokerUnavailable, ConfirmedChannel
from colmena.runtime.queues import QueueMismatch, queue_declarations, queue_name
from colmena.store.outbox import OutboxMessage

log = structlog.get_logger(__name__)

REDIAL_AFTER_S = 1.0
UNREACHABLE = (TimeoutError, BrokerUnavailable, pika.exceptions.AMQPError, OSError)


def _message_fields(row: OutboxMessage, prefix: str, timestamp_ms: int) -> dict[str, Any]:
    """The fields of `dramatiq.Message`, in its order; its id is the row's, so redeliveries
    share it."""
    return {
        "queue_name": queue_name(prefix, row.queue),
        "actor_name": row.actor,
        "args": tuple(row.args),
        "kwargs": row.kwargs,
        "options": {},
        "message_id": row.message_id,
        "message_timestamp": timestamp_ms,
    }


def to_dramatiq_message(row: OutboxMessage, prefix: str) -> dramatiq.Message:
    """The Dramatiq message for an outbox row, for a broker that takes Message objects."""
    return dramatiq.Message(**_message_fields(row, prefix, int(time.time() * 1000)))


def encode_row(row: OutboxMessage, prefix: str, timestamp_ms: int) -> bytes:
    """The body `to_dramatiq_message(row, prefix).encode()` gives, without building the Message
    (the relay encodes thousands a second)."""
    return dramatiq.get_encoder().encode(_message_fields(row, prefix, timestamp_ms))


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
    """Pipelined, confirmed publishing to RabbitMQ over one connection per process.

    Concurrent `publish_many` calls share the channel. A row counts as published only when
    RabbitMQ confirmed it within `confirm_timeout`; a broker that stopped confirming (blocked by
    an alarm, or a half-dead connection) is treated as gone: the channel is abandoned and the
    next call connects again. `urls` may name every node of a cluster (a list, or one string
    with commas): the publisher connects to the first that answers and, when that connection is
    lost, to the next; what was in flight on the lost one counts as unconfirmed, so the rows
    stay in the outbox and the relay publishes them again.
    """

    def __init__(
        self,
        urls: BrokerUrls,
        prefix: str,
        *,
        quorum: bool = False,
        connect_timeout: float = 5.0,
        confirm_timeout: float = 30.0,
    ) -> None:
        self.nodes = BrokerNodes(urls)
        self.prefix = prefix
        self.quorum = quorum
        self.connect_timeout = connect_timeout
        self.confirm_timeout = confirm_timeout
        self._channel: ConfirmedChannel | None = None
        self._channel_url = ""
        self._declared: set[str] = set()
        self._lock = asyncio.Lock()
        self._redial_at = 0.0

    async def _open_channel(self) -> ConfirmedChannel:
        """The open channel, or a new one on the first node that answers; after every node
        failed, fail at once for REDIAL_AFTER_S instead of dialling (and waiting) again for
        every call."""
        async with self._lock:
            if self._channel is not None and self._channel.is_open:
                return self._channel
            if self._channel is not None:
                self.nodes.lost(self._channel_url)
            self._channel = None
            self._declared.clear()
            if time.monotonic() < self._redial_at:
                raise BrokerUnavailable("connect failed moments ago")
            dialled = await self.nodes.dial(
                lambda url: ConfirmedChannel.open(url, timeout=self.connect_timeout), UNREACHABLE
            )
            if dialled is not None:
                self._channel_url, self._channel = dialled
                return self._channel
            self._redial_at = time.monotonic() + REDIAL_AFTER_S
            raise BrokerUnavailable(f"no broker node answers ({self.nodes.labels()})")

    async def _declare(self, channel: ConfirmedChannel, name: str) -> None:
        if name in self._declared:
            return
        for queue, arguments in queue_declarations(name, quorum=self.quorum):
            await channel.declare(queue, arguments)
        self._declared.add(name)

    async def publish_many(self, rows: Sequence[OutboxMessage]) -> list[bool]:
        if not rows:
            return []
        try:
            channel = await self._open_channel()
            for name in {queue_name(self.prefix, row.queue) for row in rows}:
                await self._declare(channel, name)
        except UNREACHABLE as exc:
            log.warning(
                "broker unreachable, rows stay in the outbox",
                error=str(exc) or type(exc).__name__,
                count=len(rows),
            )
            await self._reset()
            return [False] * len(rows)
        except QueueMismatch as exc:
            log.error("queue declaration refused, rows stay in the outbox", error=str(exc))
            await self._reset()
            return [False] * len(rows)
        timestamp_ms = int(time.time() * 1000)
        confirms = [
            channel.publish(
                queue_name(self.prefix, row.queue),
                encode_row(row, self.prefix, timestamp_ms),
                row.message_id,
            )
            for row in rows
        ]
        try:
            async with asyncio.timeout(self.confirm_timeout):
                for confirm in confirms:
                    await asyncio.shield(confirm)  # a timeout must not cancel the confirm itself
        except TimeoutError:
            log.warning("broker did not confirm in time, rows stay in the outbox", count=len(rows))
            channel.abandon()  # settles every unconfirmed publish as False
        results = [confirm.result() for confirm in confirms]
        if not all(results) and channel.is_open:
            # Nacked or returned. A returned message means its queue is gone: declare again. A
            # channel that published to a quorum queue while its leader failed over can go on
            # nacking every message to it, while a fresh channel is served: start a new one.
            log.warning(
                "broker refused messages, rows stay in the outbox; reopening the channel",
                count=results.count(False),
            )
            channel.abandon()
        return results

    async def check(self) -> bool:
        try:
            await self._open_channel()
        except UNREACHABLE:
            return False
        return True

    async def _reset(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def close(self) -> None:
        async with self._lock:
            await self._reset()
