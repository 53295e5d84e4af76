"""Dead letters: read and requeue the `<queue>.XQ` queues Dramatiq fills after the last retry.

Browsing takes messages without acknowledging them and closes the channel, which hands every
one back to RabbitMQ untouched. Requeueing publishes a fresh copy (retries reset, same message
id, so idempotent actors still recognise it) with a confirm, and only then acknowledges the
dead letter: a crash in between duplicates a message, never loses one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dramatiq
import pika
from dramatiq.common import xq_name
from pika.adapters.blocking_connection import BlockingChannel

from colmena.runtime.queues import queue_declarations, queue_name

RETRY_BOOKKEEPING = ("retries", "traceback", "requeue_timestamp", "eta")


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    message_id: str
    actor: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    retries: int
    error: str

    def summary(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "message_id": self.message_id,
            "actor": self.actor,
            "args": list(self.args),
            "retries": self.retries,
            "error": self.error,
        }


def _last_line(traceback: str | None) -> str:
    lines = [line for line in (traceback or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def fresh_copy(message: dramatiq.Message, queue: str) -> dramatiq.Message:
    """The dead message as it first was: same id and arguments, retry bookkeeping dropped."""
    options = {key: value for key, value in message.options.items() if key not in RETRY_BOOKKEEPING}
    return message.copy(queue_name=queue, options=options)


@contextmanager
def _channel(broker_url: str) -> Iterator[BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        yield channel
    finally:
        if connection.is_open:
            connection.close()


def _declare(channel: BlockingChannel, name: str, quorum: bool) -> None:
    for queue, arguments in queue_declarations(name, quorum=quorum):
        channel.queue_declare(queue=queue, durable=True, arguments=arguments)


def decode_dead_letter(queue: str, body: bytes) -> tuple[dramatiq.Message, DeadLetter]:
    message = dramatiq.Message.decode(body)
    letter = DeadLetter(
        queue=queue,
        message_id=message.message_id,
        actor=message.actor_name,
        args=tuple(message.args),
        kwargs=dict(message.kwargs),
        retries=int(message.options.get("retries", 0)),
        error=_last_line(message.options.get("traceback")),
    )
    return message, letter


def _browse(
    broker_url: str, name: str, quorum: bool
) -> Iterator[tuple[BlockingChannel, int, bytes]]:
    """Every dead letter of queue `name`, taken unacknowledged on one channel.

    Whatever the caller does not acknowledge goes back to RabbitMQ when the channel closes.
    """
    with _channel(broker_url) as channel:
        _declare(channel, name, quorum)
        while True:
            method, _properties, body = channel.basic_get(xq_name(name), auto_ack=False)
            if method is None:
                return
            yield channel, method.delivery_tag, body


def list_dead_letters(
    broker_url: str, prefix: str, queues: list[str], *, quorum: bool = False
) -> list[DeadLetter]:
    return [
        decode_dead_letter(queue, body)[1]
        for queue in queues
        for _ch, _tag, body in _browse(broker_url, queue_name(prefix, queue), quorum)
    ]


def requeue(
    broker_url: str,
    prefix: str,
    queues: list[str],
    *,
    message_id: str | None = None,
    quorum: bool = False,
) -> list[DeadLetter]:
    """Move dead letters (all, or the one with `message_id`) back to their queue."""
    moved: list[DeadLetter] = []
    for queue in queues:
        name = queue_name(prefix, queue)
        for channel, tag, body in _browse(broker_url, name, quorum):
            message, letter = decode_dead_letter(queue, body)
            if message_id is not None and letter.message_id != message_id:
                continue
            channel.basic_publish(
                exchange="",
                routing_key=name,
                body=fresh_copy(message, name).encode(),
                properties=pika.BasicProperties(delivery_mode=2),
                mandatory=True,
            )
            channel.basic_ack(tag)
            moved.append(letter)
    return moved
