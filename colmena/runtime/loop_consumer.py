"""Consuming RabbitMQ queues on the event loop: one connection, one channel per queue.

The loop worker (`colmena.runtime.loop_worker`) runs colmena's actors as tasks on the event loop
that owns their resources; consuming on that same loop means a message reaches its actor, and
its ack reaches RabbitMQ, without crossing a thread. pika's asyncio adapter does it for a few
microseconds per frame (see `colmena.runtime.confirms` for why not aio_pika), and its
coalescing transport writes every ack of one loop iteration in one send().

Each queue gets a channel of its own, so its `basic_qos` prefetch bounds only that queue's
unacknowledged messages, as a Dramatiq consumer's connection does. Whatever closes (the
connection, any channel, a consumer cancelled by the broker because its queue was deleted)
ends the whole consumer: `lost` resolves, the owner connects anew, and RabbitMQ redelivers
every message that was not acknowledged, so nothing is lost. An ack for a delivery of a closed
channel is dropped: its tag means nothing on another channel, and the message comes again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions

from colmena.runtime.confirms import BrokerUnavailable, _CoalescingConnection
from colmena.runtime.queues import declare_refusal


@dataclass(frozen=True)
class Subscription:
    """A queue to consume and how many of its messages may be unacknowledged at once."""

    queue: str
    prefetch: int


class Delivery:
    """One delivered message; `ack` and `nack` answer for it on the channel it came on."""

    __slots__ = ("body", "channel", "queue", "redelivered", "tag")

    def __init__(self, channel: Any, tag: int, body: bytes, queue: str, redelivered: bool) -> None:
        self.channel = channel
        self.tag = tag
        self.body = body
        self.queue = queue
        self.redelivered = redelivered

    @property
    def answerable(self) -> bool:
        """Whether an ack or nack can still reach RabbitMQ (the channel is still open)."""
        return bool(self.channel.is_open)

    def ack(self) -> None:
        if self.channel.is_open:
            self.channel.basic_ack(self.tag)

    def nack(self) -> None:
        """Reject without requeueing: the queue's dead-letter exchange routes it to Q.XQ."""
        if self.channel.is_open:
            self.channel.basic_nack(self.tag, requeue=False)


OnDelivery = Callable[[Delivery], None]


class LoopConsumer:
    """Consumes some queues over one connection; open it with `LoopConsumer.open`."""

    def __init__(self) -> None:
        self._connection: Any = None
        self._channels: list[Any] = []
        self._consumers: list[tuple[Any, str]] = []
        self.lost: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        self._waiters: set[asyncio.Future[Any]] = set()

    @classmethod
    async def open(
        cls,
        url: str,
        declarations: Sequence[tuple[str, dict[str, Any]]],
        subscriptions: Sequence[Subscription],
        on_delivery: OnDelivery,
        *,
        timeout: float,
    ) -> LoopConsumer:
        """Connect, declare the queues (raising QueueMismatch if RabbitMQ refuses one), then
        start consuming every subscription, all within `timeout` seconds."""
        consumer = cls()
        try:
            async with asyncio.timeout(timeout):
                await consumer._open(url, timeout, declarations, subscriptions, on_delivery)
        except BaseException:
            consumer.close_now()
            raise
        return consumer

    async def _open(
        self,
        url: str,
        timeout: float,
        declarations: Sequence[tuple[str, dict[str, Any]]],
        subscriptions: Sequence[Subscription],
        on_delivery: OnDelivery,
    ) -> None:
        parameters = pika.URLParameters(url)
        parameters.socket_timeout = timeout
        parameters.stack_timeout = timeout
        parameters.connection_attempts = 1
        await self._call(lambda done: self._connect(parameters, done))
        first = await self._open_channel()
        for queue, arguments in declarations:
            await self._declare(first, queue, arguments)
        for index, subscription in enumerate(subscriptions):
            channel = first if index == 0 else await self._open_channel()
            await self._qos(channel, subscription.prefetch)
            tag = channel.basic_consume(
                subscription.queue, self._deliver_to(on_delivery, subscription.queue)
            )
            self._consumers.append((channel, tag))

    async def _qos(self, channel: Any, prefetch: int) -> None:
        await self._call(lambda done: channel.basic_qos(prefetch_count=prefetch, callback=done))

    def _deliver_to(self, on_delivery: OnDelivery, queue: str) -> Callable[..., None]:
        def deliver(channel: Any, method: Any, _properties: Any, body: bytes) -> None:
            on_delivery(Delivery(channel, method.delivery_tag, body, queue, method.redelivered))

        return deliver

    def _connect(self, parameters: pika.URLParameters, done: Callable[[Any], None]) -> None:
        self._connection = _CoalescingConnection(
            parameters,
            on_open_callback=done,
            on_open_error_callback=lambda _connection, error: self._lose(error),
            on_close_callback=lambda _connection, reason: self._lose(reason),
            custom_ioloop=asyncio.get_running_loop(),
        )

    async def _open_channel(self) -> Any:
        channel = await self._call(lambda done: self._connection.channel(on_open_callback=done))
        channel.add_on_close_callback(lambda _channel, reason: self._lose(reason))
        channel.add_on_cancel_callback(
            lambda _frame: self._lose(pika.exceptions.ConsumerCancelled("cancelled by the broker"))
        )
        self._channels.append(channel)
        return channel

    async def _declare(self, channel: Any, queue: str, arguments: dict[str, Any]) -> None:
        try:
            await self._call(
                lambda done: channel.queue_declare(
                    queue, durable=True, arguments=arguments, callback=done
                )
            )
        except BrokerUnavailable:
            refusal = declare_refusal(self._reason(), queue, arguments)
            if refusal is not None:
                raise refusal from None
            raise

    def _reason(self) -> BaseException | None:
        return self.lost.result() if self.lost.done() else None

    async def _call(self, start: Callable[[Callable[[Any], None]], None]) -> Any:
        """Start a pika operation and wait for its callback, or fail if the consumer is lost."""
        if self.lost.done():
            raise BrokerUnavailable(f"consumer closed: {self.lost.result()}")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def done(result: Any) -> None:
            if not future.done():
                future.set_result(result)

        self._waiters.add(future)
        try:
            start(done)
            return await future
        finally:
            self._waiters.discard(future)

    def _lose(self, reason: BaseException) -> None:
        """Resolve `lost`, fail whatever waits, and let the connection go."""
        if not self.lost.done():
            self.lost.set_result(reason)
        for waiter in list(self._waiters):
            if not waiter.done():
                waiter.set_exception(BrokerUnavailable(f"{type(reason).__name__}: {reason}"))
        self.close_now()

    def cancel(self) -> None:
        """Ask RabbitMQ to stop delivering; what it already sent still arrives."""
        for channel, tag in self._consumers:
            if channel.is_open:
                channel.basic_cancel(tag)
        self._consumers.clear()

    def close_now(self) -> None:
        """Start closing the connection (RabbitMQ requeues every unacknowledged delivery)."""
        connection = self._connection
        if connection is not None and not (connection.is_closing or connection.is_closed):
            try:
                connection.close()
            except pika.exceptions.AMQPError:
                pass

    async def close(self, timeout: float = 5.0) -> None:
        """Close after the acks written so far have left, waiting up to `timeout` for it."""
        if not self.lost.done():
            self.close_now()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self.lost)
        except TimeoutError:
            pass
