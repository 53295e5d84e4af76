"""One RabbitMQ connection with one confirm-mode channel, for publishing many messages at once.

Why pika's asyncio adapter and not aio_pika: a publish here is a synchronous write to the socket
buffer plus a future for its confirm, under 20 µs of CPU. aio_pika spends 80-120 µs per message
(a task, a channel lock and a drain per publish), which capped the outbox relay at a few times
`actor.send()` one by one. Confirms arrive as Basic.Ack/Nack frames, possibly `multiple`, and
resolve the futures in delivery-tag order.

A message is confirmed (its future resolves True) only on a Basic.Ack for it that was not
preceded by a Basic.Return: with `mandatory`, an unroutable message is returned and then acked,
and that is not a delivery. Everything else (Nack, Return, channel or connection lost, closed
by us) resolves False.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
from pika.adapters.asyncio_connection import AsyncioConnection

from colmena.runtime.queues import declare_refusal

PERSISTENT = 2


class _CoalescingConnection(AsyncioConnection):
    """Gives the transport one buffer per loop iteration instead of one per frame: pika's
    transport sends every buffer with its own send() call, three per message."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._outgoing: list[bytes] = []
        super().__init__(*args, **kwargs)

    def _adapter_emit_data(self, data: bytes) -> None:
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outgoing.append(data)

    def _flush(self) -> None:
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        if self._transport is not None:
            super()._adapter_emit_data(data)


class BrokerUnavailable(Exception):
    """The connection or channel could not be opened, or was lost while we waited."""


class ConfirmedChannel:
    """Publishes with publisher confirms; open it with `ConfirmedChannel.open`."""

    def __init__(self) -> None:
        self._connection: Any = None
        self._channel: Any = None
        self._closed = asyncio.get_running_loop().create_future()
        self._reason: BaseException | None = None
        self._waiters: set[asyncio.Future[Any]] = set()
        self._pending: OrderedDict[int, tuple[asyncio.Future[bool], str]] = OrderedDict()
        self._returned: set[str] = set()
        self._last_tag = 0

    @classmethod
    async def open(cls, url: str, *, timeout: float) -> ConfirmedChannel:
        """Connect, open a channel and put it in confirm mode, all within `timeout` seconds."""
        channel = cls()
        try:
            async with asyncio.timeout(timeout):
                await channel._open(url, timeout)
        except BaseException:
            channel.abandon()
            raise
        return channel

    async def _open(self, url: str, timeout: float) -> None:
        parameters = pika.URLParameters(url)
        parameters.socket_timeout = timeout
        parameters.stack_timeout = timeout
        parameters.connection_attempts = 1
        await self._call(lambda done: self._connect(parameters, done))
        self._channel = await self._call(
            lambda done: self._connection.channel(on_open_callback=done)
        )
        self._channel.add_on_close_callback(lambda _channel, reason: self._lost(reason))
        self._channel.add_on_return_callback(self._on_return)
        await self._call(lambda done: self._channel.confirm_delivery(self._on_confirm, done))

    def _connect(self, parameters: pika.URLParameters, done: Callable[[Any], None]) -> None:
        self._connection = _CoalescingConnection(
            parameters,
            on_open_callback=done,
            on_open_error_callback=lambda _connection, error: self._lost(error),
            on_close_callback=self._on_connection_closed,
            custom_ioloop=asyncio.get_running_loop(),
        )

    async def _call(self, start: Callable[[Callable[[Any], None]], None]) -> Any:
        """Start a pika operation and wait for its callback, or fail if the channel is lost."""
        if self._closed.done():
            raise BrokerUnavailable("channel closed")
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

    @property
    def is_open(self) -> bool:
        return not self._closed.done()

    async def declare(self, queue: str, arguments: dict[str, Any] | None) -> None:
        """Declare a durable queue. A mismatch with an existing one loses the channel and raises
        QueueMismatch, which says how to fix it."""
        try:
            await self._call(
                lambda done: self._channel.queue_declare(
                    queue, durable=True, arguments=arguments, callback=done
                )
            )
        except BrokerUnavailable:
            refusal = declare_refusal(self._reason, queue, arguments)
            if refusal is not None:
                raise refusal from None
            raise

    def publish(self, routing_key: str, body: bytes, message_id: str) -> asyncio.Future[bool]:
        """Write one persistent, mandatory message; the future says whether it was confirmed."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._closed.done():
            future.set_result(False)
            return future
        try:
            self._channel.basic_publish(
                "",
                routing_key,
                body,
                pika.BasicProperties(delivery_mode=PERSISTENT, message_id=message_id),
                mandatory=True,
            )
        except (pika.exceptions.AMQPError, OSError) as exc:
            self._lost(exc)
            future.set_result(False)
            return future
        self._last_tag += 1
        self._pending[self._last_tag] = (future, message_id)
        return future

    def _on_return(self, _channel: Any, _method: Any, properties: Any, _body: bytes) -> None:
        self._returned.add(properties.message_id)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        confirmed = isinstance(method, pika.spec.Basic.Ack)
        if method.multiple:
            while self._pending and next(iter(self._pending)) <= method.delivery_tag:
                self._settle(self._pending.popitem(last=False)[1], confirmed)
        elif (entry := self._pending.pop(method.delivery_tag, None)) is not None:
            self._settle(entry, confirmed)

    def _settle(self, entry: tuple[asyncio.Future[bool], str], confirmed: bool) -> None:
        future, message_id = entry
        if message_id in self._returned:
            self._returned.discard(message_id)
            confirmed = False
        if not future.done():
            future.set_result(confirmed)

    def _on_connection_closed(self, _connection: Any, reason: BaseException) -> None:
        self._lost(reason)

    def _lost(self, reason: BaseException) -> None:
        """Fail whatever waits, settle unconfirmed publishes as False, let the connection go."""
        if not self._closed.done():
            self._closed.set_result(None)
            self._reason = reason
        for waiter in list(self._waiters):
            if not waiter.done():
                waiter.set_exception(BrokerUnavailable(f"{type(reason).__name__}: {reason}"))
        pending, self._pending = self._pending, OrderedDict()
        for future, _message_id in pending.values():
            if not future.done():
                future.set_result(False)
        connection = self._connection
        if connection is not None and not (connection.is_closing or connection.is_closed):
            try:
                connection.close()
            except pika.exceptions.AMQPError:
                pass

    def abandon(self) -> None:
        """Give up on the channel now: unconfirmed publishes resolve False, closing starts."""
        self._lost(pika.exceptions.ConnectionClosedByClient(200, "abandoned"))

    async def close(self, timeout: float = 5.0) -> None:
        """Close cleanly, waiting up to `timeout` for the broker to acknowledge."""
        connection = self._connection
        if connection is None or not connection.is_open:
            self.abandon()
            return
        closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_closed(_connection: Any, _reason: BaseException) -> None:
            if not closed.done():
                closed.set_result(None)

        connection.add_on_close_callback(on_closed)
        self.abandon()
        try:
            async with asyncio.timeout(timeout):
                await closed
        except TimeoutError:
            pass
