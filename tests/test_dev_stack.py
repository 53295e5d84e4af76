"""Operator commands reach a running `colmena dev` with no configuration, and only a live one.

`colmena dev` publishes `.colmena/dev-stack.json` (mode 0600); `status` and `dlq` in a second
process read it. The in-process broker's dead letters are listed (the undecodable ones raw),
requeued, deleted and exported through the dev control routes, which refuse a request without
the token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import dramatiq
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from dramatiq import MessageProxy
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Retries

from colmena.config import Settings
from colmena.config.dev_stack import (
    STACK_FILE,
    StaleDevStack,
    new_dev_stack,
    operator_settings,
    read_dev_stack,
    write_dev_stack,
)
from colmena.http.dev_control import control_app
from colmena.runtime.deadletters import Requeued
from colmena.runtime.queue_admin import DevControlQueueAdmin, InProcessQueueAdmin
from tests.conftest import wait_for
from tests.test_dev import free_port, ready, start_dev, stop


def clean_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("COLMENA_")}


def colmena(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A command from a second terminal: same directory, no COLMENA_* variable."""
    return subprocess.run(
        [sys.executable, "-m", "colmena", *args],
        cwd=workdir,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_runtime_file_is_private_and_refused_when_stale(tmp_path: Path) -> None:
    stack = new_dev_stack(database_url="postgresql:///x", broker_url=None, ingress_url="http://h")
    path = write_dev_stack(tmp_path, stack)
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_dev_stack(tmp_path) == stack

    path.write_text(json.dumps({**json.loads(path.read_text()), "process_started": "1"}))
    with pytest.raises(StaleDevStack, match="no longer running"):
        read_dev_stack(tmp_path)

    write_dev_stack(tmp_path, stack)
    path.chmod(0o644)
    with pytest.raises(StaleDevStack, match="not private"):
        read_dev_stack(tmp_path)


def test_explicit_settings_win_over_the_runtime_file(tmp_path: Path, settings: Settings) -> None:
    stack = new_dev_stack(database_url="postgresql:///x", broker_url=None, ingress_url="http://h")
    write_dev_stack(tmp_path, stack)
    configured, found = operator_settings(settings.model_copy(update={"data_dir": tmp_path}))
    assert found is None and configured.database_url == settings.database_url

    bare = settings.model_copy(update={"data_dir": tmp_path, "database_url": None})
    dev_settings, found = operator_settings(bare)
    assert found == stack
    assert dev_settings.env == "dev"
    assert dev_settings.require_database_url() == "postgresql:///x"


async def test_in_process_dead_letters_are_listed_and_requeued() -> None:
    broker = StubBroker(middleware=[Retries(max_retries=0)])
    calls: list[int] = []

    def fails_once(value: int) -> None:
        calls.append(value)
        if len(calls) == 1:
            raise ValueError("first attempt fails")

    actor = dramatiq.Actor(
        fails_once,
        broker=broker,
        actor_name="fails_once",
        queue_name="t_bots",
        priority=0,
        options={},
    )
    worker = dramatiq.Worker(broker, worker_threads=1)
    worker.start()
    try:
        actor.send(7)
        broker.join("t_bots", fail_fast=False)
        admin = InProcessQueueAdmin(broker, "t_", consumers=1)

        # Whatever else lands among them is listed raw, never requeued, and can be deleted.
        broker.dead_letters_by_queue["t_bots"] += [b"\x00not json", b'{"not": "a message"}']

        letter, not_json, not_a_message = await admin.dead_letters(["bots"])
        assert (letter.actor, letter.args, letter.queue) == ("fails_once", (7,), "bots")
        assert not letter.undecodable and not_json.undecodable and not_a_message.undecodable
        assert (not_json.position, not_json.body, not_json.preview) == (
            2,
            b"\x00not json",
            "\\x00not json",
        )
        [depth] = await admin.depths(["bots"])
        assert (depth.ready, depth.dead, depth.consumers) == (0, 3, 1)

        assert await admin.requeue(["bots"], "no-such-id") == Requeued([], [])
        done = await admin.requeue(["bots"], None)
        broker.join("t_bots", fail_fast=False)
    finally:
        worker.stop()
    assert [moved.message_id for moved in done.moved] == [letter.message_id]
    assert [skipped.body for skipped in done.skipped] == [not_json.body, not_a_message.body]
    assert calls == [7, 7]
    assert await admin.delete("bots", "9") is None
    deleted = await admin.delete("bots", "1")
    assert deleted is not None and deleted.body == not_json.body
    assert [left.body for left in await admin.dead_letters(["bots"])] == [not_a_message.body]


async def test_dead_letters_cross_the_dev_control_routes_whole() -> None:
    """A second terminal sees the dev process's dead letters as they are, raw bytes included."""
    broker = StubBroker()
    broker.declare_queue("t_bots")
    message = dramatiq.Message(
        queue_name="t_bots", actor_name="run_command", args=("c1",), kwargs={}, options={}
    )
    broker.dead_letters_by_queue["t_bots"] += [MessageProxy(message), b"\xffraw"]
    ingress = web.Application()
    ingress.add_subapp("/dev", control_app(InProcessQueueAdmin(broker, "t_", consumers=1), "tok"))
    async with TestServer(ingress, host="127.0.0.1") as server:
        remote = DevControlQueueAdmin(str(server.make_url("")), "tok")
        real, raw = await remote.dead_letters(["bots"])
        assert (real.message_id, real.actor, real.args) == (
            message.message_id,
            "run_command",
            ("c1",),
        )
        assert (raw.undecodable, raw.body, raw.position) == (True, b"\xffraw", 2)

        done = await remote.requeue(["bots"], None)
        assert [moved.message_id for moved in done.moved] == [message.message_id]
        assert [skipped.body for skipped in done.skipped] == [b"\xffraw"]
        assert broker.queues["t_bots"].qsize() == 1

        deleted = await remote.delete("bots", "1")
        assert deleted is not None and deleted.body == b"\xffraw"
        assert await remote.delete("bots", "1") is None
        assert await remote.dead_letters(["bots"]) == []


async def test_status_and_dlq_reach_the_running_dev_from_a_second_terminal(tmp_path: Path) -> None:
    port = free_port()
    process = start_dev(tmp_path, port)
    try:
        await wait_for(lambda: ready(port), timeout=60, interval=0.25)
        stack_file = tmp_path / ".colmena" / STACK_FILE
        assert stack_file.stat().st_mode & 0o777 == 0o600

        status = colmena(tmp_path, "status", "--json")
        assert status.returncode == 0, status.stderr
        document = json.loads(status.stdout)
        assert document["broker_error"] is None
        assert set(document["queues"]) == {
            "payments",
            "licenses",
            "stamping",
            "rates",
            "bots",
            "notifications",
        }
        assert document["queues"]["payments"]["consumers"] > 0

        listed = colmena(tmp_path, "dlq", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout) == []
        exported = colmena(tmp_path, "dlq", "export", "--out", "dead.jsonl")
        assert exported.returncode == 0, exported.stderr
        assert (tmp_path / "dead.jsonl").read_text() == ""
        missing = colmena(tmp_path, "dlq", "delete", "--queue", "bots", "--id", "1")
        assert missing.returncode == 1 and "no dead letter 1 in bots" in missing.stderr

        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{port}/dev/dead-letters", json={}) as refused,
        ):
            assert refused.status == 401
            assert (await refused.json())["error"]["code"] == "unauthorized"
    finally:
        output = await stop(process)
    assert process.returncode == 0, output
    assert "Warning" not in output
    assert not stack_file.exists()

    after = colmena(tmp_path, "status")
    assert after.returncode == 2
    assert "no `colmena dev` runs in this directory" in after.stderr
