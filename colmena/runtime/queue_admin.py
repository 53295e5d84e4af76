"""What operators ask of the queues: depths, dead letters (list, requeue, delete), on any broker
colmena runs.

`colmena status` and `colmena dlq` speak to a `QueueAdmin`. On RabbitMQ it is passive declares
and the `.XQ` queues; in `colmena dev` on the in-process broker the queues live in the dev
process, so the commands of a second terminal ask that process through its control routes
(`colmena.http.dev_control`), which answer from an `InProcessQueueAdmin` over the StubBroker.
Every dead letter is listed, the undecodable ones raw (`colmena.runtime.deadletters`).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Protocol

import aiohttp
import dramatiq
from dramatiq import MessageProxy
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name

from colmena.config import Settings, SettingsError
from colmena.config.dev_stack import DevStack
from colmena.config.settings import BrokerUrls, amqp_urls
from colmena.errors import TransientError
from colmena.runtime.deadletters import (
    DeadLetter,
    Requeued,
    decode_dead_letter,
    delete,
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

    async def requeue(self, queues: Sequence[str], message_id: str | None) -> Requeued:
        """Move dead letters (all, or the one with `message_id`) back to their queue; the
        undecodable ones are skipped and said so."""

    async def delete(self, queue: str, ident: str) -> DeadLetter | None:
        """Remove the dead letter `ident` (message id or position) names from `queue`."""

    async def close(self) -> None: ...


class RabbitQueueAdmin:
    """RabbitMQ: passive declares for depths, the `.XQ` queues for dead letters."""

    def __init__(self, urls: BrokerUrls, prefix: str, *, quorum: bool) -> None:
        self.urls = amqp_urls(urls)
        self.prefix = prefix
        self.quorum = quorum
        self._probe = QueueProbe(urls, prefix)

    async def depths(self, queues: Sequence[str]) -> list[QueueDepth]:
        try:
            return await self._probe.depths(queues)
        except PROBE_ERRORS as exc:
            raise BrokerUnreachable(f"RabbitMQ unreachable ({exc or type(exc).__name__})") from exc

    async def dead_letters(self, queues: Sequence[str]) -> list[DeadLetter]:
        return await asyncio.to_thread(
            list_dead_letters, self.urls, self.prefix, list(queues), quorum=self.quorum
        )

    async def requeue(self, queues: Sequence[str], message_id: str | None) -> Requeued:
        return await asyncio.to_thread(
            requeue, self.urls, self.prefix, list(queues), message_id=message_id, quorum=self.quorum
        )

    async def delete(self, queue: str, ident: str) -> DeadLetter | None:
        return await asyncio.to_thread(
            delete, self.urls, self.prefix, queue, ident, quorum=self.quorum
        )

    async def close(self) -> None:
        await self._probe.close()


class InProcessQueueAdmin:
    """The StubBroker of `colmena dev`: its queues and dead letters live in this process.

    Its dead letters are message proxies; anything else found among them (raw bytes) is listed
    raw, as on RabbitMQ.
    """

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

    def _held(self, queue: str) -> list[MessageProxy]:
        return self.broker.dead_letters_by_queue.get(queue_name(self.prefix, queue), [])

    def _decoded(
        self, queue: str
    ) -> list[tuple[MessageProxy, dramatiq.Message | None, DeadLetter]]:
        """(held item, message or None, letter) of each dead letter of `queue`, oldest first."""
        found = []
        for position, item in enumerate(list(self._held(queue)), start=1):
            body = item if isinstance(item, bytes) else item.encode()
            message, letter = decode_dead_letter(queue, position, body)
            found.append((item, message, letter))
        return found

    async def dead_letters(self, queues: Sequence[str]) -> list[DeadLetter]:
        return [letter for queue in queues for _item, _message, letter in self._decoded(queue)]

    async def requeue(self, queues: Sequence[str], message_id: str | None) -> Requeued:
        moved, skipped = [], []
        for queue in queues:
            for item, message, letter in self._decoded(queue):
                if message_id is not None and letter.message_id != message_id:
                    continue
                if message is None:
                    skipped.append(letter)
                    continue
                self._held(queue).remove(item)
                self.broker.enqueue(fresh_copy(message, queue_name(self.prefix, queue)))
                moved.append(letter)
        return Requeued(moved, skipped)

    async def delete(self, queue: str, ident: str) -> DeadLetter | None:
        for item, _message, letter in self._decoded(queue):
            if letter.matches(ident):
                self._held(queue).remove(item)
                return letter
        return None

    async def close(self) -> None:
        return None


def letter_from_json(document: dict[str, Any]) -> DeadLetter:
    fields = {key: value for key, value in document.items() if key != "body_base64"}
    body = base64.b64decode(document["body_base64"])
    return DeadLetter(**{**fields, "args": tuple(document["args"]), "body": body})


def letter_json(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter in full over the dev control routes, its bytes in base64."""
    fields = {key: value for key, value in asdict(letter).items() if key != "body"}
    body = base64.b64encode(letter.body).decode("ascii")
    return {**fields, "args": list(letter.args), "body_base64": body}


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
        return [letter_from_json(letter) for letter in found["dead_letters"]]

    async def requeue(self, queues: Sequence[str], message_id: str | None) -> Requeued:
        payload = {"queues": list(queues), "message_id": message_id}
        found = await self._call("POST", "/dead-letters/requeue", payload)
        return Requeued(
            [letter_from_json(letter) for letter in found["requeued"]],
            [letter_from_json(letter) for letter in found["skipped"]],
        )

    async def delete(self, queue: str, ident: str) -> DeadLetter | None:
        found = await self._call("POST", "/dead-letters/delete", {"queue": queue, "id": ident})
        deleted = found["deleted"]
        return None if deleted is None else letter_from_json(deleted)

    async def close(self) -> None:
        return None


def queue_admin_for(settings: Settings, stack: DevStack | None) -> QueueAdmin:
    """RabbitMQ when a broker URL is configured, else the running dev stack's in-process broker."""
    if settings.broker_url is not None:
        return RabbitQueueAdmin(
            settings.broker_urls(),
            settings.queue_prefix,
            quorum=settings.quorum_queues,
        )
    if stack is not None:
        return DevControlQueueAdmin(stack.ingress_url, stack.control_token)
    raise SettingsError(
        "COLMENA_BROKER_URL is not set and no `colmena dev` runs in this directory "
        "(amqp://user:password@host:5672/)"
    )
