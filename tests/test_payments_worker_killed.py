"""A worker process SIGKILLed while settling a payment: the message is redelivered, one effect."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from pydantic import SecretStr

from bench.common import free_port
from colmena.gateways import sample_events as events
from colmena.store.pool import connect
from tests.conftest import wait_for
from tests.payments_support import (
    LICENSE_METADATA,
    STRIPE_SECRET,
    follow_ups,
    payment_status,
    stripe_post_args,
)


def start_worker_process(settings, log_path) -> subprocess.Popen[bytes]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("COLMENA_")}
    env.update(
        {
            "COLMENA_DATABASE_URL": settings.require_database_url(),
            "COLMENA_BROKER_URL": settings.require_broker_url(),
            "COLMENA_QUEUE_PREFIX": settings.queue_prefix,
            "COLMENA_DATA_DIR": str(settings.data_dir),
            "COLMENA_METRICS_PORT": str(free_port()),
            "COLMENA_MIN_BACKOFF_MS": "100",
        }
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "colmena",
            "worker",
            "--queues",
            "payments",
            "--processes",
            "1",
            "--threads",
            "1",
        ],
        env=env,
        start_new_session=True,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )


async def blocked_on_lock(db) -> bool:
    return await db.fetchval(
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )


async def test_killed_worker_message_is_redelivered_and_applied_once(
    settings, make_client, db, database_url, tmp_path
) -> None:
    pay_settings = settings.model_copy(update={"stripe_webhook_secrets": SecretStr(STRIPE_SECRET)})
    client = await make_client(pay_settings)
    intent = events.payment_intent(metadata=LICENSE_METADATA)
    blocker = await connect(database_url)
    transaction = blocker.transaction()
    await transaction.start()
    await blocker.execute("LOCK TABLE payments IN SHARE ROW EXCLUSIVE MODE")

    response = await client.post(
        "/webhooks/stripe",
        **stripe_post_args(events.stripe_event("payment_intent.succeeded", intent)),
    )
    assert response.status == 200
    first = start_worker_process(pay_settings, tmp_path / "first.log")
    try:
        await wait_for(lambda: blocked_on_lock(db), timeout=60)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    await transaction.rollback()
    await blocker.close()
    assert await payment_status(db, "stripe", intent["id"]) is None

    second = start_worker_process(pay_settings, tmp_path / "second.log")
    try:
        await wait_for(
            lambda: db.fetchval("SELECT count(*) = 1 FROM inbox WHERE processed_at IS NOT NULL"),
            timeout=60,
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
    assert second.returncode == 0, (tmp_path / "second.log").read_text()
    assert await payment_status(db, "stripe", intent["id"]) == "approved"
    assert await db.fetchval("SELECT count(*) FROM payment_events") == 1
    assert await follow_ups(db) == [("licenses", "deliver_license"), ("stamping", "stamp_invoice")]
