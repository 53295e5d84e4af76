"""The confirm-mode channel on the real RabbitMQ: only an ack counts, any failure is False."""

from __future__ import annotations

import asyncio

import pika
import pytest

from colmena.runtime.confirms import BrokerUnavailable, ConfirmedChannel
from colmena.runtime.queues import QueueMismatch
from tests.conftest import AMQP_URL


@pytest.fixture
async def channel():
    channel = await ConfirmedChannel.open(AMQP_URL, timeout=5)
    yield channel
    await channel.close()


async def test_a_nacked_publish_is_not_confirmed(channel, queue_prefix) -> None:
    # A queue that holds one message and refuses the rest makes RabbitMQ answer Basic.Nack.
    queue = queue_prefix + "payments"
    await channel.declare(queue, {"x-max-length": 1, "x-overflow": "reject-publish"})
    confirms = [channel.publish(queue, b"{}", f"m{i}") for i in range(3)]
    assert await asyncio.gather(*confirms) == [True, False, False]
    assert channel.is_open


async def test_a_lost_channel_fails_what_waits_and_what_comes_after(channel, queue_prefix) -> None:
    queue = queue_prefix + "payments"
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    connection.channel().queue_declare(queue, durable=True)
    connection.close()
    # Declaring it again with other arguments makes RabbitMQ close the channel; the error
    # says which queue and what to do.
    with pytest.raises(QueueMismatch, match=f"queue '{queue}' exists with other arguments"):
        await channel.declare(queue, {"x-max-length": 5})
    assert not channel.is_open
    assert await channel.publish(queue, b"{}", "late") is False


async def test_an_unreachable_broker_fails_at_once_not_at_the_timeout() -> None:
    with pytest.raises(BrokerUnavailable):
        async with asyncio.timeout(2):
            await ConfirmedChannel.open("amqp://guest:guest@127.0.0.1:1/%2F", timeout=30)
