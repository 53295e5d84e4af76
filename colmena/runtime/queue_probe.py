"""Queue depths and consumers read from RabbitMQ with passive declares.

A passive declare answers with a queue's ready-message and consumer counts without creating or
changing anything, so it can never trip over a queue declared with other arguments (quorum or
classic, dead-letter settings): RabbitMQ refuses a redeclaration whose arguments differ. A queue
that does not exist yet (no worker or publisher touched it) is reported as empty; RabbitMQ closes
the channel on that answer, so a fresh channel is opened for the next queue. Any node of a cluster
answers for every queue: the probe uses the first of its URLs that answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from dramatiq.common import dq_name, xq_name

from colmena.config.settings import BrokerUrls
from colmena.runtime.broker_nodes import BrokerNodes
from colmena.runtime.queues import queue_name

PROBE_ERRORS = (
    aio_pika.exceptions.AMQPError,
    aiormq.exceptions.AMQPError,
    OSError,
    asyncio.TimeoutError,
)


@dataclass(frozen=True)
class QueueDepth:
    """One domain queue: messages ready in Q, waiting for a retry in Q.DQ, dead in Q.XQ."""

    queue: str
    ready: int
    delayed: int
    dead: int
    consumers: int

    def to_json(self) -> dict[str, int]:
        document = asdict(self)
        del document["queue"]
        return document


class QueueProbe:
    """Passive declares over one lazily opened connection, reopened after any failure.

    The ingress keeps one probe for its lifetime (a connection per scrape would fill RabbitMQ's
    log with connection lines); `colmena status` uses one and closes it.
    """

    def __init__(self, urls: BrokerUrls, prefix: str, *, timeout: float = 2.5) -> None:
        self.nodes = BrokerNodes(urls)
        self.prefix = prefix
        self.timeout = timeout
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()

    async def depths(self, queues: Sequence[str]) -> list[QueueDepth]:
        """Depths of the unprefixed `queues`; raises one of PROBE_ERRORS if RabbitMQ is silent."""
        async with self._lock:
            try:
                return [await self._depth(queue) for queue in queues]
            except BaseException:
                # Cancelled (scrape timeout) or failed mid-RPC: the channel's state is unknown.
                await self._discard()
                raise

    async def _depth(self, queue: str) -> QueueDepth:
        name = queue_name(self.prefix, queue)
        ready, consumers = await self._count(name)
        delayed, _ = await self._count(dq_name(name))
        dead, _ = await self._count(xq_name(name))
        return QueueDepth(queue=queue, ready=ready, delayed=delayed, dead=dead, consumers=consumers)

    async def _count(self, name: str) -> tuple[int, int]:
        channel = await self._open_channel()
        try:
            declared = await channel.declare_queue(name, passive=True, timeout=self.timeout)
        except aiormq.exceptions.ChannelNotFoundEntity:
            self._channel = None
            return 0, 0
        result = declared.declaration_result
        return result.message_count or 0, result.consumer_count or 0

    async def _open_channel(self) -> AbstractChannel:
        if self._connection is None or self._connection.is_closed:
            self._connection = await self._connect()
            self._channel = None
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(publisher_confirms=False)
        return self._channel

    async def _connect(self) -> AbstractConnection:
        """A connection to the first node that answers (the publisher warns about the others:
        a probe runs on every scrape and would repeat it)."""
        failure: BaseException | None = None
        for url in self.nodes.in_order():
            try:
                connection = await aio_pika.connect(url, timeout=self.timeout)
            except PROBE_ERRORS as exc:
                failure = exc
                continue
            self.nodes.answered(url)
            return connection
        raise ConnectionError(f"no broker node answers ({self.nodes.labels()})") from failure

    async def _discard(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            try:
                await asyncio.shield(connection.close())
            except PROBE_ERRORS:
                pass

    async def close(self) -> None:
        async with self._lock:
            await self._discard()
