"""Queue names and the arguments every declaration of them must carry.

The broker, the pipelined publisher, the dead-letter tools and the queue probe all declare or
name the same queues; RabbitMQ refuses a redeclaration whose arguments differ
(PRECONDITION_FAILED), so they take both from here, and `mismatch` turns that refusal into
one line an operator can act on.
"""

from __future__ import annotations

from typing import Any

import pika.exceptions
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL
from dramatiq.common import dq_name, xq_name

from colmena.errors import StartupError

DOMAIN_QUEUES = ("payments", "licenses", "stamping", "rates", "bots", "notifications")
PRECONDITION_FAILED = 406
SWITCH_STEPS = (
    "stop publishers and the ingress, let the workers drain every queue, check that {queues} "
    "are empty, delete them, then start everything with COLMENA_QUORUM_QUEUES={wanted} "
    "(README: switching queue types)"
)


class QueueMismatch(StartupError):
    """A queue exists with other arguments than colmena declares; RabbitMQ cannot change them."""


def queue_name(prefix: str, queue: str) -> str:
    return f"{prefix}{queue}"


def queue_declarations(name: str, *, quorum: bool) -> list[tuple[str, dict[str, Any]]]:
    """The queues Dramatiq needs for `name` (main, delay, dead letters) and their arguments."""
    kind = {"x-queue-type": "quorum"} if quorum else {}
    main_args = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": xq_name(name), **kind}
    return [
        (name, main_args),
        (dq_name(name), main_args),
        (xq_name(name), {"x-message-ttl": DEAD_MESSAGE_TTL, **kind}),
    ]


def _base_name(queue: str) -> str:
    for suffix in (".DQ", ".XQ"):
        if queue.endswith(suffix):
            return queue.removesuffix(suffix)
    return queue


def mismatch(queue: str, reply_text: str, *, quorum: bool) -> QueueMismatch:
    """The error for RabbitMQ's PRECONDITION_FAILED `reply_text` on declaring `queue`.

    A queue's type cannot be changed in place: the only way from classic to quorum (or back) is
    to empty the queues and declare them anew, so the message gives those steps.
    """
    base = _base_name(queue)
    queues = ", ".join(name for name, _ in queue_declarations(base, quorum=quorum))
    if "'x-queue-type'" in reply_text:
        have, wanted = ("classic", "quorum") if quorum else ("quorum", "classic")
        return QueueMismatch(
            f"queue {queue!r} exists as a {have} queue but COLMENA_QUORUM_QUEUES="
            f"{str(quorum).lower()} declares {wanted} (RabbitMQ: {reply_text}); "
            + SWITCH_STEPS.format(queues=queues, wanted=str(quorum).lower())
        )
    return QueueMismatch(
        f"queue {queue!r} exists with other arguments than colmena declares "
        f"(RabbitMQ: {reply_text}); "
        + SWITCH_STEPS.format(queues=queues, wanted=str(quorum).lower())
    )


def declare_refusal(
    error: BaseException | None, queue: str, arguments: dict[str, Any] | None
) -> QueueMismatch | None:
    """The QueueMismatch for a declaration of `queue` that `error` (the channel's closing) says
    RabbitMQ refused, or None when the channel closed for another reason."""
    if not (
        isinstance(error, pika.exceptions.ChannelClosedByBroker)
        and error.reply_code == PRECONDITION_FAILED
    ):
        return None
    quorum = (arguments or {}).get("x-queue-type") == "quorum"
    return mismatch(queue, error.reply_text, quorum=quorum)
