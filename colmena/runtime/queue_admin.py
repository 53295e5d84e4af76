"""What operators ask of the queues: depths, dead letters, requeue; on any broker colmena runs.

`colmena status` and `colmena dlq` speak to a `QueueAdmin`. On RabbitMQ it is passive declares
and the `.XQ` queues; in `colmena dev` on the in-process broker the queues live in the dev
process, so the commands of a second terminal ask that process through its control routes
(`colmena.http.dev_control`), which answer from an `InProcessQueueAdmin` over the StubBroker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Protocol

import aiohttp
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name

from colmena.config import Settings, SettingsError
from colmena.config.dev_stack import DevStack
from colmena.errors import TransientError
from colmena.runtime.deadletters import (
    DeadLetter,
    decode_dead_letter,
    fresh_copy,
    list_dead_letters,
    requeue,
)
from colmena.runtime.queue_probe import PROBE_ERRORS, QueueDepth, QueueProbe
from colmena.runtime.queues import queue_name


class BrokerUnreachable(TransientError):
    """The broker (or the dev process holding the in-process one) did not answer."""


class QueueAdmin(Protocol):
    async def depths(self, queues: Sequence[str]) -> list[QueueDepth]:
        """Ready, delayed, dead and consumers of each unprefixed queue."""

    async def dead_letters(self, queues: Sequence[str]) -> list[DeadLetter]:
        """Every dead letter of `queues`, left where it is."""

    async def requeue(self, queues: Sequence[str], message_id: str | None) -> list[DeadLetter]:
        """Move dead letters (all, or the one with `message_id`) back to their queue."""

    async def close(self) -> None: ...


class RabbitQueueAdmin:
    """RabbitMQ: passive declares for depths, the `.XQ` queues for dead letters."""

    def __init__(self, url: str, prefix: str, *, quorum: bool) -> None:
        self.url = url
        self.prefix = prefix
        self.quorum = quorum
        self._probe = QueueProbe(url, prefix)

    async def depths(self, queues: Sequence[str]) -> list[QueueDepth]:
        try:
            return await self._probe.depths(queues)
        except PROBE_ERRORS as exc:
            raise BrokerUnreachable(f"RabbitMQ unreachable ({exc or type(exc).__name__})") from exc

    async def dead_letters(self, queues: Sequence[str]) -> list[DeadLetter]:
        return await asyncio.to_thread(
            list_dead_letters, self.url, self.prefix, list(queues), quorum=self.quorum
        )

    async def requeue(self, queues: Sequence[str], message_id: str | None) -> list[DeadLetter]:
        return await asyncio.to_thread(
            requeue, self.url, self.prefix, list(queues), message_id=message_id, quorum=self.quorum
        )

    async def close(self) -> None:
        await self._probe.close()


class InProcessQueueAdmin:
    """The StubBroker of `colmena dev`: its queues and dead letters live in this process."""

    def __init__(self, broker: StubBroker, prefix: str, *, consumers: int) -> None:
        self.broker = broker
        self.prefix = prefix
        self.consumers = consumers

    def _size(self, name: str) -> int:
        queue = self.broker.queues.get(name)
        return 0 if queue is None else queue.qsize()

    async def depths(self, queues: Sequence[str]) -> list[QueueDepth]:
        depths = []
        for queue in queues:
            name = queue_name(self.prefix, queue)
            declared = name in self.broker.queues
            depths.append(
                QueueDepth(
                    queue=queue,
                    ready=self._size(name),
                    delayed=self._size(dq_name(name)),
                    dead=len(self.broker.dead_letters_by_queue.get(name, [])),
                    consumers=self.consumers if declared else 0,
                )
            )
        return depths

    async def dead_letters(self, queues: Sequence[str]) -> list[DeadLetter]:
        return [
            decode_dead_letter(queue, proxy.encode())[1]
            for queue in queues
            for proxy in list(
                self.broker.dead_letters_by_queue.get(queue_name(self.prefix, queue), [])
            )
        ]

    async def requeue(self, queues: Sequence[str], message_id: str | None) -> list[DeadLetter]:
        moved = []
        for queue in queues:
            name = queue_name(self.prefix, queue)
            letters = self.broker.dead_letters_by_queue.get(name, [])
            for proxy in list(letters):
                message, letter = decode_dead_letter(queue, proxy.encode())
                if message_id is not None and letter.message_id != message_id:
                    continue
                letters.remove(proxy)
                self.broker.enqueue(fresh_copy(message, name))
                moved.append(letter)
        return moved

    async def close(self) -> None:
        return None


def _letter(document: dict[str, Any]) -> DeadLetter:
    return DeadLetter(**{**document, "args": tuple(document["args"])})


def letter_json(letter: DeadLetter) -> dict[str, Any]:
    return {**asdict(letter), "args": list(letter.args)}


def depth_json(depth: QueueDepth) -> dict[str, Any]:
    return asdict(depth)


class DevControlQueueAdmin:
    """A second terminal's view of the dev process's in-process broker, over its control routes."""

    def __init__(self, ingress_url: str, token: str, *, timeout_s: float = 10.0) -> None:
        self.base = ingress_url.rstrip("/") + "/dev"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def _call(self, method: str, path: str, payload: dict[str, Any]) -> Any:
        try:
            async with (
                aiohttp.ClientSession(timeout=self.timeout, headers=self.headers) as session,
                session.request(method, self.base + path, json=payload) as response,
            ):
                document = await response.json(content_type=None)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise BrokerUnreachable(
                f"colmena dev at {self.base} did not answer ({exc or type(exc).__name__})"
            ) from exc
        if status != 200:
            raise BrokerUnreachable(f"colmena dev answered {status}: {document}")
        return document

    async def depths(self, queues: Sequence[str]) -> list[QueueDepth]:
        found = await self._call("POST", "/queues", {"queues": list(queues)})
        return [QueueDepth(**depth) for depth in found["queues"]]

    async def dead_letters(self, queues: Sequence[str]) -> list[DeadLetter]:
        found = await self._call("POST", "/dead-letters", {"queues": list(queues)})
        return [_letter(letter) for letter in found["dead_letters"]]

    async def requeue(self, queues: Sequence[str], message_id: str | None) -> list[DeadLetter]:
        payload = {"queues": list(queues), "message_id": message_id}
        found = await self._call("POST", "/dead-letters/requeue", payload)
        return [_letter(letter) for letter in found["requeued"]]

    async def close(self) -> None:
        return None


def queue_admin_for(settings: Settings, stack: DevStack | None) -> QueueAdmin:
    """RabbitMQ when a broker URL is configured, else the running dev stack's in-process broker."""
    if settings.broker_url is not None:
        return RabbitQueueAdmin(
            settings.broker_url.get_secret_value(),
            settings.queue_prefix,
            quorum=settings.quorum_queues,
        )
    if stack is not None:
        return DevControlQueueAdmin(stack.ingress_url, stack.control_token)
    raise SettingsError(
        "COLMENA_BROKER_URL is not set and no `colmena dev` runs in this directory "
        "(amqp://user:password@host:5672/)"
    )
