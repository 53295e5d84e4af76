"""Dead letters: read, requeue, delete the `<queue>.XQ` queues Dramatiq fills after the last retry.

Browsing takes messages without acknowledging them and closes the channel, which hands every
one back to RabbitMQ untouched. Requeueing publishes a fresh copy (retries reset, same message
id, so idempotent actors still recognise it) with a confirm, and only then acknowledges the
dead letter: a crash in between duplicates a message, never loses one.

A dead letter need not be a Dramatiq message (anything published to a `.XQ` queue lands
there): one that does not decode is shown raw (size, first bytes escaped, its AMQP properties)
instead of hiding every other one behind a DecodeError. It can be exported or deleted, never
requeued: no actor could run it. A dead letter is named by its message id or by its position
in its queue (1 for the oldest), which is all an undecodable one may have. Quorum and classic
dead-letter queues are read the same way, on whichever cluster node answers first.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Generator, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import pika
from dramatiq.common import xq_name
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import BasicProperties

from colmena.config.settings import BrokerUrls, amqp_urls
from colmena.runtime.queues import queue_declarations, queue_name

RETRY_BOOKKEEPING = ("retries", "traceback", "requeue_timestamp", "eta")
PREVIEW_BYTES = 80
_PROPERTIES = (
    "content_type",
    "content_encoding",
    "headers",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
)


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    position: int
    message_id: str
    actor: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    retries: int
    error: str
    body: bytes = field(repr=False)
    amqp: dict[str, Any] = field(default_factory=dict)
    undecodable: bool = False

    @property
    def preview(self) -> str:
        """The first bytes with anything unprintable escaped, as Python writes bytes."""
        return repr(self.body[:PREVIEW_BYTES])[2:-1]

    def matches(self, ident: str) -> bool:
        """Whether `ident` names this letter: a number is a position, anything else an id."""
        if ident.isascii() and ident.isdigit():
            return int(ident) == self.position
        return bool(self.message_id) and ident == self.message_id

    def summary(self) -> dict[str, Any]:
        if self.undecodable:
            return {
                "queue": self.queue,
                "position": self.position,
                "message_id": self.message_id,
                "undecodable": True,
                "size": len(self.body),
                "preview": self.preview,
                "amqp": self.amqp,
                "error": self.error,
            }
        return {
            "queue": self.queue,
            "position": self.position,
            "message_id": self.message_id,
            "actor": self.actor,
            "args": list(self.args),
            "retries": self.retries,
            "error": self.error,
        }

    def export_line(self) -> dict[str, Any]:
        """What `colmena dlq export` writes: where it was, and its exact bytes."""
        return {
            "queue": self.queue,
            "position": self.position,
            "message_id": self.message_id,
            "undecodable": self.undecodable,
            "amqp": self.amqp,
            "body_base64": base64.b64encode(self.body).decode("ascii"),
        }


@dataclass(frozen=True)
class Requeued:
    moved: list[DeadLetter]
    skipped: list[DeadLetter]  # undecodable: left where they are


def _last_line(traceback: str | None) -> str:
    lines = [line for line in (traceback or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def fresh_copy(message: dramatiq.Message, queue: str) -> dramatiq.Message:
    """The dead message as it first was: same id and arguments, retry bookkeeping dropped."""
    options = {key: value for key, value in message.options.items() if key not in RETRY_BOOKKEEPING}
    return message.copy(queue_name=queue, options=options)


def _plain(value: Any) -> Any:
    """An AMQP property or header as JSON can carry it (headers hold bytes, dates, lists)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, bytes):
        return repr(value)[2:-1]
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def amqp_of(properties: BasicProperties) -> dict[str, Any]:
    """The properties RabbitMQ handed over with a dead letter, the unset ones left out."""
    found = {name: getattr(properties, name, None) for name in _PROPERTIES}
    return {name: _plain(value) for name, value in found.items() if value is not None}


def decode_dead_letter(
    queue: str, position: int, body: bytes, amqp: dict[str, Any] | None = None
) -> tuple[dramatiq.Message | None, DeadLetter]:
    """The Dramatiq message and its summary, or no message and the letter marked undecodable."""
    amqp = amqp or {}
    try:
        message = dramatiq.Message.decode(body)
        return message, DeadLetter(
            queue=queue,
            position=position,
            message_id=str(message.message_id),
            actor=str(message.actor_name),
            args=tuple(message.args),
            kwargs=dict(message.kwargs),
            retries=int(message.options.get("retries", 0)),
            error=_last_line(message.options.get("traceback")),
            body=body,
            amqp=amqp,
        )
    except Exception as exc:  # whatever it holds, it is still shown: raw
        cause = exc.__cause__ or exc
        return None, DeadLetter(
            queue=queue,
            position=position,
            message_id=str(amqp.get("message_id", "")),
            actor="",
            args=(),
            kwargs={},
            retries=0,
            error=f"not a Dramatiq message ({type(cause).__name__})",
            body=body,
            amqp=amqp,
            undecodable=True,
        )


@contextmanager
def _channel(broker_url: BrokerUrls) -> Iterator[BlockingChannel]:
    """A confirm-mode channel on the first node of `broker_url` that answers (pika dials the
    nodes in order)."""
    connection = pika.BlockingConnection([pika.URLParameters(url) for url in amqp_urls(broker_url)])
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


def _browse(
    broker_url: BrokerUrls, queue: str, prefix: str, quorum: bool
) -> Generator[tuple[BlockingChannel, int, dramatiq.Message | None, DeadLetter], None, None]:
    """Every dead letter of `queue`, oldest first, taken unacknowledged on one channel.

    Whatever the caller does not acknowledge goes back to RabbitMQ when the channel closes.
    """
    with _channel(broker_url) as channel:
        _declare(channel, queue_name(prefix, queue), quorum)
        position = 0
        while True:
            method, properties, body = channel.basic_get(
                xq_name(queue_name(prefix, queue)), auto_ack=False
            )
            if method is None:
                return
            position += 1
            message, letter = decode_dead_letter(queue, position, body, amqp_of(properties))
            yield channel, method.delivery_tag, message, letter


def list_dead_letters(
    broker_url: BrokerUrls, prefix: str, queues: list[str], *, quorum: bool = False
) -> list[DeadLetter]:
    return [
        letter
        for queue in queues
        for _channel_, _tag, _message, letter in _browse(broker_url, queue, prefix, quorum)
    ]


def requeue(
    broker_url: BrokerUrls,
    prefix: str,
    queues: list[str],
    *,
    message_id: str | None = None,
    quorum: bool = False,
) -> Requeued:
    """Move dead letters (all, or the one with `message_id`) back to their queue.

    Undecodable ones are skipped, and returned as such: no actor could run them.
    """
    moved: list[DeadLetter] = []
    skipped: list[DeadLetter] = []
    for queue in queues:
        name = queue_name(prefix, queue)
        for channel, tag, message, letter in _browse(broker_url, queue, prefix, quorum):
            if message_id is not None and letter.message_id != message_id:
                continue
            if message is None:
                skipped.append(letter)
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
    return Requeued(moved, skipped)


def delete(
    broker_url: BrokerUrls, prefix: str, queue: str, ident: str, *, quorum: bool = False
) -> DeadLetter | None:
    """Remove the one dead letter of `queue` that `ident` names (message id or position)."""
    with closing(_browse(broker_url, queue, prefix, quorum)) as letters:
        for channel, tag, _message, letter in letters:
            if letter.matches(ident):
                channel.basic_ack(tag)
                return letter
    return None
