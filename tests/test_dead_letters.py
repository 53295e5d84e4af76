"""Dead letters are readable whatever they hold: `colmena dlq` on the real RabbitMQ.

Next to a real Dramatiq dead letter, a `.XQ` queue gets a body that is not JSON and a JSON
document that is not a Dramatiq message (anyone can publish there). `list` shows all three,
the two raw ones marked undecodable; `requeue` moves only the real one and says it skipped the
others; `delete` removes one raw one; `export` writes every one with its exact bytes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import dramatiq
import pika
from dramatiq.common import xq_name

from colmena.config import Settings
from colmena.runtime.queue_admin import RabbitQueueAdmin
from colmena.runtime.queues import queue_declarations
from tests.conftest import AMQP_URL, queue_counts

NOT_JSON = b"\x00\xffnot json at all\n\x1b[31m"
NOT_A_MESSAGE = json.dumps({"hello": "world", "args": 3}).encode()


def real_dead_letter(queue: str) -> dramatiq.Message:
    """A message as the worker leaves it in `.XQ` after its last retry."""
    return dramatiq.Message(
        queue_name=queue,
        actor_name="run_command",
        args=("0b0c3a4e-0000-4000-8000-000000000000",),
        kwargs={},
        options={"retries": 3, "traceback": "Traceback ...\nValueError: the engine was down\n"},
    )


def fill_dead_letters(settings: Settings) -> dramatiq.Message:
    """bots.XQ: the real dead letter, then the body that is not JSON, then the JSON non-message."""
    name = settings.queue_prefix + "bots"
    message = real_dead_letter(name)
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for queue, arguments in queue_declarations(name, quorum=False):
            channel.queue_declare(queue=queue, durable=True, arguments=arguments)
        bodies = [
            (message.encode(), pika.BasicProperties(delivery_mode=2)),
            (
                NOT_JSON,
                pika.BasicProperties(
                    delivery_mode=2, content_type="application/octet-stream", message_id="raw-1"
                ),
            ),
            (NOT_A_MESSAGE, pika.BasicProperties(headers={"x-origin": "someone else"})),
        ]
        for body, properties in bodies:
            channel.basic_publish("", xq_name(name), body, properties=properties, mandatory=True)
    finally:
        connection.close()
    return message


async def colmena(settings: Settings, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("COLMENA_")}
    env.update(
        {
            "COLMENA_DATABASE_URL": settings.require_database_url(),
            "COLMENA_BROKER_URL": settings.require_broker_url(),
            "COLMENA_QUEUE_PREFIX": settings.queue_prefix,
        }
    )
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "colmena", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_dlq_lists_requeues_deletes_and_exports_whatever_the_queue_holds(
    settings: Settings, tmp_path: Path
) -> None:
    message = await asyncio.to_thread(fill_dead_letters, settings)
    name = settings.queue_prefix + "bots"

    listed = await colmena(settings, tmp_path, "dlq", "list", "--queue", "bots", "--json")
    assert listed.returncode == 0, listed.stderr
    real, not_json, not_a_message = json.loads(listed.stdout)
    assert (real["message_id"], real["actor"], real["retries"]) == (
        message.message_id,
        "run_command",
        3,
    )
    assert "undecodable" not in real
    assert real["error"] == "ValueError: the engine was down"
    assert not_json["undecodable"] and not_a_message["undecodable"]
    assert (not_json["position"], not_json["size"], not_json["message_id"]) == (
        2,
        len(NOT_JSON),
        "raw-1",
    )
    assert not_json["preview"] == repr(NOT_JSON)[2:-1]  # control bytes escaped, never raw
    assert not_json["amqp"]["content_type"] == "application/octet-stream"
    assert not_a_message["amqp"]["headers"] == {"x-origin": "someone else"}
    assert not_a_message["preview"] == NOT_A_MESSAGE.decode()
    assert queue_counts(name) == (0, 0, 3), "listing must not consume dead letters"

    table = await colmena(settings, tmp_path, "dlq", "list", "--queue", "bots")
    assert table.returncode == 0, table.stderr
    assert table.stdout.count("UNDECODABLE") == 2 and message.message_id in table.stdout
    assert "\x1b" not in table.stdout and "\\x1b" in table.stdout

    requeued = await colmena(settings, tmp_path, "dlq", "requeue", "--queue", "bots")
    assert requeued.returncode == 0, requeued.stderr
    assert "requeued 1 message(s)" in requeued.stdout
    assert "skipped 2 undecodable message(s)" in requeued.stdout
    assert queue_counts(name) == (1, 0, 2)

    deleted = await colmena(settings, tmp_path, "dlq", "delete", "--queue", "bots", "--id", "raw-1")
    assert deleted.returncode == 0, deleted.stderr
    assert "undecodable" in deleted.stdout
    assert queue_counts(name) == (1, 0, 1)
    admin = RabbitQueueAdmin(AMQP_URL, settings.queue_prefix, quorum=False)
    try:
        [left] = await admin.dead_letters(["bots"])
    finally:
        await admin.close()
    assert (left.body, left.position) == (NOT_A_MESSAGE, 1)

    out = tmp_path / "bots-dead.jsonl"
    exported = await colmena(settings, tmp_path, "dlq", "export", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    [line] = [json.loads(text) for text in out.read_text().splitlines()]
    assert base64.b64decode(line["body_base64"]) == NOT_A_MESSAGE
    assert (line["queue"], line["undecodable"]) == ("bots", True)
    assert queue_counts(name) == (1, 0, 1), "export leaves dead letters where they are"

    again = await colmena(settings, tmp_path, "dlq", "export", "--out", str(out))
    assert again.returncode == 1 and "exists" in again.stderr


async def test_export_writes_every_dead_letter_with_its_exact_bytes(
    settings: Settings, tmp_path: Path
) -> None:
    message = await asyncio.to_thread(fill_dead_letters, settings)
    out = tmp_path / "all.jsonl"
    exported = await colmena(
        settings, tmp_path, "dlq", "export", "--queue", "bots", "--out", str(out)
    )
    assert exported.returncode == 0, exported.stderr
    assert "exported 3 dead letter(s)" in exported.stdout
    lines = [json.loads(text) for text in out.read_text().splitlines()]
    assert [base64.b64decode(line["body_base64"]) for line in lines] == [
        message.encode(),
        NOT_JSON,
        NOT_A_MESSAGE,
    ]
    assert [line["undecodable"] for line in lines] == [False, True, True]


async def test_requeue_of_one_undecodable_letter_refuses_and_leaves_it(
    settings: Settings, tmp_path: Path
) -> None:
    await asyncio.to_thread(fill_dead_letters, settings)
    refused = await colmena(
        settings, tmp_path, "dlq", "requeue", "--queue", "bots", "--id", "raw-1"
    )
    assert refused.returncode == 1
    assert "undecodable: not requeued" in refused.stderr and "Traceback" not in refused.stderr
    assert queue_counts(settings.queue_prefix + "bots") == (0, 0, 3)
