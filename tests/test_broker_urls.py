"""COLMENA_BROKER_URL as a list of nodes, and queue-type mismatches, on the machine's broker.

A node that does not answer is skipped with one warning naming it (host:port, never the
password); the others serve. A quorum declaration on an existing classic queue fails with one
line that names the queue and the drain-and-switch steps. The cluster itself (failover when a
node dies) is tested in test_rabbit_cluster.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from colmena.config import Settings, SettingsError, load_settings
from colmena.runtime.broker_check import check_broker
from colmena.runtime.broker_nodes import BrokerNodes, node_label
from colmena.runtime.deadletters import list_dead_letters
from colmena.runtime.publisher import AmqpPublisher
from colmena.runtime.queue_probe import QueueProbe
from colmena.runtime.queues import QueueMismatch
from colmena.store import outbox
from tests.conftest import AMQP_URL
from tests.fuzz_support import LogCapture, capture_logs
from tests.ops_support import colmena_env, free_port

UNREACHABLE_WARNING = "broker node unreachable, using the others"


@pytest.fixture
def dead_url() -> str:
    """A node URL nothing listens on (a port just bound and released), with a password."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"amqp://guest:s3cret-pass@127.0.0.1:{port}/%2F?heartbeat=30"


def test_a_comma_separated_broker_url_names_every_node_in_order() -> None:
    value = "amqp://u:p@rabbit-1:5672/%2F?heartbeat=10, amqp://u:p@rabbit-2:5673/%2F"
    settings = Settings(broker_url=value, _env_file=None)
    assert settings.broker_urls() == [
        "amqp://u:p@rabbit-1:5672/%2F?heartbeat=10",
        "amqp://u:p@rabbit-2:5673/%2F",
    ]
    assert settings.require_broker_url() == value
    assert Settings(broker_url="amqp://u:p@one/", _env_file=None).broker_urls() == [
        "amqp://u:p@one/"
    ]


@pytest.mark.parametrize(
    "value", ["amqp://u:top-secret@h1/,,amqp://u:top-secret@h2/", "amqp://u:top-secret@h1/,"]
)
def test_an_empty_entry_in_the_list_is_one_line_without_the_password(value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(broker_url=value, _env_file=None)
    message = str(raised.value)
    assert message.startswith("invalid setting COLMENA_BROKER_URL: empty broker URL"), message
    assert "top-secret" not in message


def test_a_node_that_is_not_amqp_is_refused() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(broker_url="amqp://u:p@h1/,http://u:p@h2/", _env_file=None)
    assert "COLMENA_BROKER_URL" in str(raised.value) and "one per cluster node" in str(raised.value)


def test_a_node_is_named_by_host_and_port_only() -> None:
    assert node_label("amqp://colmena:pw@10.0.0.7:5673/%2F?heartbeat=10") == "10.0.0.7:5673"
    assert node_label("amqps://colmena:pw@rabbit.example/") == "rabbit.example:5671"
    assert node_label("amqp://colmena:pw@[fd00::1]/") == "[fd00::1]:5672"


def test_nodes_are_dialled_from_the_last_that_answered_and_a_failure_is_news_once() -> None:
    nodes = BrokerNodes("amqp://h1/,amqp://h2/,amqp://h3/")
    assert nodes.in_order() == ["amqp://h1/", "amqp://h2/", "amqp://h3/"]
    assert nodes.failed("amqp://h1/") is True
    assert nodes.failed("amqp://h1/") is False  # still down: no second warning
    assert nodes.answered("amqp://h2/") is False
    assert nodes.in_order() == ["amqp://h2/", "amqp://h3/", "amqp://h1/"]
    nodes.lost("amqp://h2/")
    assert nodes.in_order() == ["amqp://h3/", "amqp://h1/", "amqp://h2/"]
    assert nodes.answered("amqp://h1/") is True  # back: the next failure is news again
    assert nodes.failed("amqp://h1/") is True


def logged(capture: LogCapture) -> list[dict[str, Any]]:
    """The JSON log lines colmena wrote while `capture` ran (pika's own lines are not JSON)."""
    return [json.loads(line) for line in capture.text().splitlines() if line.startswith("{")]


async def test_the_publisher_skips_an_unreachable_node_with_one_warning(
    db, settings: Settings, dead_url: str
) -> None:
    async with db.transaction():
        rows = [
            await outbox.record(db, queue="payments", actor="noop", args=[index])
            for index in range(4)
        ]
    publisher = AmqpPublisher([dead_url, AMQP_URL], settings.queue_prefix, connect_timeout=2)
    try:
        with capture_logs() as capture:
            assert await publisher.publish_many(rows[:2]) == [True, True]
            await publisher.close()  # the next call dials again, from the node that answered
            assert await publisher.publish_many(rows[2:]) == [True, True]
    finally:
        await publisher.close()
    logs = logged(capture)
    warnings = [entry for entry in logs if entry["level"] == "warning"]
    assert [(entry["event"], entry["node"]) for entry in warnings] == [
        (UNREACHABLE_WARNING, node_label(dead_url))
    ]
    assert "s3cret-pass" not in repr(logs)


def test_the_start_up_check_puts_answering_nodes_first_and_warns_once(
    settings: Settings, dead_url: str
) -> None:
    with capture_logs() as capture:
        ordered = check_broker(
            [dead_url, AMQP_URL], settings.queue_prefix, ["payments"], quorum=False
        )
    assert ordered == [AMQP_URL, dead_url]
    logs = logged(capture)
    assert [(entry["event"], entry["node"]) for entry in logs if entry["level"] == "warning"] == [
        (UNREACHABLE_WARNING, node_label(dead_url))
    ]
    assert "s3cret-pass" not in repr(logs)


async def test_probe_and_dead_letters_use_the_node_that_answers(
    settings: Settings, dead_url: str
) -> None:
    urls = [dead_url, AMQP_URL]
    check_broker(AMQP_URL, settings.queue_prefix, ["payments"], quorum=False)
    probe = QueueProbe(urls, settings.queue_prefix)
    try:
        [depth] = await probe.depths(["payments"])
    finally:
        await probe.close()
    assert (depth.queue, depth.ready, depth.delayed, depth.dead) == ("payments", 0, 0, 0)
    letters = await asyncio.to_thread(list_dead_letters, urls, settings.queue_prefix, ["payments"])
    assert letters == []


def _mismatch_text(prefix: str) -> str:
    queue = f"{prefix}payments"
    return (
        f"queue '{queue}' exists as a classic queue but COLMENA_QUORUM_QUEUES=true declares "
        "quorum (RabbitMQ: PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue "
        f"'{queue}' in vhost '/': received the value 'quorum' of type 'longstr' but current is "
        "none); stop publishers and the ingress, let the workers drain every queue, check that "
        f"{queue}, {queue}.DQ, {queue}.XQ are empty, delete them, then start everything with "
        "COLMENA_QUORUM_QUEUES=true (README: switching queue types)"
    )


async def test_quorum_on_an_existing_classic_queue_names_the_queue_and_the_fix(
    db, settings: Settings
) -> None:
    prefix = settings.queue_prefix
    check_broker(AMQP_URL, prefix, ["payments"], quorum=False)  # the queues exist, classic

    with pytest.raises(QueueMismatch) as raised:
        check_broker(AMQP_URL, prefix, ["payments"], quorum=True)
    assert str(raised.value) == _mismatch_text(prefix)

    async with db.transaction():
        row = await outbox.record(db, queue="payments", actor="noop")
    publisher = AmqpPublisher(AMQP_URL, prefix, quorum=True)
    try:
        with capture_logs() as capture:
            assert await publisher.publish_many([row]) == [False]  # left to the relay
    finally:
        await publisher.close()
    errors = [entry for entry in logged(capture) if entry["level"] == "error"]
    assert [entry["error"] for entry in errors] == [_mismatch_text(prefix)]


@pytest.mark.parametrize(
    "command",
    [["worker", "--queues", "payments", "--processes", "1"], ["ingress"]],
    ids=["worker", "ingress"],
)
def test_a_process_told_quorum_on_classic_queues_exits_2_with_one_line(
    settings: Settings, tmp_path: Path, command: list[str]
) -> None:
    check_broker(AMQP_URL, settings.queue_prefix, ["payments"], quorum=False)
    env = colmena_env(
        settings,
        COLMENA_QUORUM_QUEUES="true",
        COLMENA_METRICS_PORT=str(free_port()),
        COLMENA_HTTP_PORT=str(free_port()),
        COLMENA_INGRESS_METRICS_PORT=str(free_port()),
    )
    result = subprocess.run(
        [sys.executable, "-m", "colmena", *command],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1] == "colmena: " + _mismatch_text(
        settings.queue_prefix
    )
