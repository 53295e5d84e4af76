"""The broker check a process runs before it serves: which nodes answer, and whether its queues
can be declared as configured.

A node that does not answer is not fatal (a cluster serves on without it): it is named in one
warning and moved to the end of the list, so the process's own connections dial a live node
first. A queue that exists with other arguments is fatal: RabbitMQ would refuse every consumer
and publisher of it, and `QueueMismatch` says which queue and how to switch. The check runs once
in the `colmena worker` process, which hands the reordered list to Dramatiq's worker processes.
"""

from __future__ import annotations

from collections.abc import Sequence

import pika
import pika.exceptions
import structlog

from colmena.config.settings import BrokerUrls, amqp_urls
from colmena.runtime.broker_nodes import node_label
from colmena.runtime.queues import declare_refusal, queue_declarations, queue_name

log = structlog.get_logger(__name__)

CHECK_TIMEOUT_S = 5.0


def _declare_all(connection: pika.BlockingConnection, names: Sequence[str], quorum: bool) -> None:
    """Declare each queue with colmena's arguments; a refusal raises QueueMismatch."""
    for name in names:
        for queue, arguments in queue_declarations(name, quorum=quorum):
            channel = connection.channel()
            try:
                channel.queue_declare(queue=queue, durable=True, arguments=arguments)
            except pika.exceptions.ChannelClosedByBroker as exc:
                refusal = declare_refusal(exc, queue, arguments)
                if refusal is not None:
                    raise refusal from None
                raise
            channel.close()


def check_broker(
    urls: BrokerUrls,
    prefix: str,
    queues: Sequence[str],
    *,
    quorum: bool,
    timeout: float = CHECK_TIMEOUT_S,
) -> list[str]:
    """Dial every node and declare the unprefixed `queues` on the first that answers.

    Returns the URLs with the nodes that answered first, in their configured order. When no
    node answers the process starts anyway, as it always has: its connections keep dialling.
    """
    answered: list[str] = []
    silent: list[str] = []
    for url in amqp_urls(urls):
        parameters = pika.URLParameters(url)
        parameters.socket_timeout = timeout
        parameters.stack_timeout = timeout
        parameters.connection_attempts = 1
        try:
            connection = pika.BlockingConnection(parameters)
        except (pika.exceptions.AMQPError, OSError) as exc:
            log.warning(
                "broker node unreachable, using the others",
                node=node_label(url),
                error=str(exc) or type(exc).__name__,
            )
            silent.append(url)
            continue
        try:
            if not answered:
                _declare_all(connection, [queue_name(prefix, queue) for queue in queues], quorum)
        finally:
            if connection.is_open:
                connection.close()
        answered.append(url)
    if not answered:
        log.warning("no broker node answers; connections keep dialling", nodes=len(silent))
    return answered + silent
