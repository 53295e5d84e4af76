"""Queue names and the arguments every declaration of them must carry.

The broker, the pipelined publisher, the dead-letter tools and the queue probe all declare or
name the same queues; RabbitMQ refuses a redeclaration whose arguments differ
(PRECONDITION_FAILED), so they take both from here.
"""

from __future__ import annotations

from typing import Any

from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL
from dramatiq.common import dq_name, xq_name

DOMAIN_QUEUES = ("payments", "licenses", "stamping", "rates", "bots")


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
