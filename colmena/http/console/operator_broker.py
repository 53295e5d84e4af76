"""The console's view of the queues: the same `QueueAdmin` `colmena status` and `colmena dlq`
speak to, held by the console sub-app.

On RabbitMQ (a broker URL is configured) it is one `RabbitQueueAdmin` for the process: its probe
keeps one connection for depths, and dead letters are browsed on a short-lived connection of
their own, as the CLI does. In `colmena dev` on the in-process broker the queues live in the
dev process, whose control routes answer for them: the admin is found through the dev stack
file (written once dev serves), so the console works in dev out of the box. Anything the broker
side raises becomes `BrokerUnavailable`, shown on the page rather than as a 500.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

import aio_pika
import aiormq
import pika.exceptions
from aiohttp import web

from colmena.config import Settings, SettingsError
from colmena.config.dev_stack import read_dev_stack
from colmena.errors import TransientError
from colmena.http.context import SETTINGS
from colmena.runtime.deadletters import DeadLetter, Requeued
from colmena.runtime.queue_admin import BrokerUnreachable, QueueAdmin, queue_admin_for
from colmena.runtime.queue_probe import QueueDepth

T = TypeVar("T")

_FAILURES = (
    BrokerUnreachable,
    SettingsError,
    pika.exceptions.AMQPError,
    aio_pika.exceptions.AMQPError,
    aiormq.exceptions.AMQPError,
    OSError,
    TimeoutError,
)


class BrokerUnavailable(TransientError):
    """The queues could not be read (broker down, or no dev process to ask)."""


class ConsoleBroker:
    """The QueueAdmin of this process, built on first use."""

    def __init__(self) -> None:
        self.settings: Settings | None = None
        self._rabbit: QueueAdmin | None = None

    def _admin(self) -> QueueAdmin:
        settings = self.settings
        if settings is None:
            raise BrokerUnavailable("the console has not served a request yet")
        if settings.broker_url is not None:
            if self._rabbit is None:
                self._rabbit = queue_admin_for(settings, None)
            return self._rabbit
        # The dev process's own control routes: stateless, so made per call.
        return queue_admin_for(settings, read_dev_stack(settings.data_dir))

    async def _call(self, work: Callable[[QueueAdmin], Awaitable[T]]) -> T:
        try:
            return await work(self._admin())
        except _FAILURES as exc:
            raise BrokerUnavailable(str(exc) or type(exc).__name__) from exc

    async def depths(self, queues: Sequence[str]) -> list[QueueDepth]:
        return await self._call(lambda admin: admin.depths(queues))

    async def dead_letters(self, queues: Sequence[str]) -> list[DeadLetter]:
        return await self._call(lambda admin: admin.dead_letters(queues))

    async def requeue(self, queue: str, message_id: str) -> Requeued:
        return await self._call(lambda admin: admin.requeue([queue], message_id))

    async def close(self) -> None:
        if self._rabbit is not None:
            await self._rabbit.close()


BROKER = web.AppKey("console_broker", ConsoleBroker)


async def _broker_ctx(console: web.Application) -> AsyncIterator[None]:
    yield
    await console[BROKER].close()


def setup(console: web.Application) -> None:
    console[BROKER] = ConsoleBroker()
    console.cleanup_ctx.append(_broker_ctx)


def broker_of(request: web.Request) -> ConsoleBroker:
    """The process's broker view, told the ingress's settings on the first request (the
    console sub-app is built before it is mounted, when the settings are not in reach)."""
    broker = request.config_dict[BROKER]
    if broker.settings is None:
        broker.settings = request.config_dict[SETTINGS]
    return broker
