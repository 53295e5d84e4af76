"""`colmena trigger bitso` against a real ingress and worker, and against `colmena dev`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from colmena.config.dev_stack import read_dev_stack
from colmena.gateways import bitso_webhooks as bitso
from tests.conftest import wait_for
from tests.payments_support import payment_status
from tests.test_bitso_settle import bitso_order
from tests.test_bitso_webhooks import KEY_ID, stand_in_keys
from tests.test_dev import free_port, ready, start_dev, stop
from tests.test_dev_sandboxes import operator


async def colmena(settings, *args: str, keys: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI as an operator runs it, configured like the test's ingress."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("COLMENA_")}
    env.update(
        {
            "COLMENA_DATABASE_URL": settings.require_database_url(),
            "COLMENA_DATA_DIR": str(settings.data_dir),
            "COLMENA_BITSO_WEBHOOK_PUBLIC_KEYS": json.dumps(keys),
        }
    )
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "colmena", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_trigger_posts_signed_events_that_settle_orders(
    settings, start_worker, make_client, db
) -> None:
    dev_key = bitso.public_key_text(bitso.dev_signing_key(settings.data_dir))
    keys = {bitso.DEV_KEY_ID: dev_key}
    active = settings.model_copy(update={"bitso_webhook_public_keys": keys})
    start_worker(settings_override=active, queues=["payments"])
    client = await make_client(active)
    url = str(client.make_url("/"))

    order_id = await bitso_order(db)
    intent_id = "7fb1011c-e451-48d5-85c4-207d1ea97b1d"
    sent = await colmena(
        active,
        "trigger",
        "bitso",
        "payment_intent",
        "COMPLETED",
        "--id",
        intent_id,
        "--order-id",
        str(order_id),
        "--url",
        url,
        keys=keys,
    )
    assert sent.returncode == 0, sent.stderr
    assert f"payment_intent {intent_id} (COMPLETED)" in sent.stdout
    assert "/webhooks/bitso -> 200" in sent.stdout
    assert sent.stderr == ""
    await wait_for(lambda: payment_status(db, "bitso", intent_id))
    assert await payment_status(db, "bitso", intent_id) == "approved"
    assert await db.fetchval("SELECT status FROM orders WHERE id = $1", order_id) == "paid"
    shown = await colmena(active, "payments", "show", "bitso", intent_id, "--json", keys=keys)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "approved"

    spei_order = await bitso_order(db)
    deposit = await colmena(
        active,
        "trigger",
        "bitso",
        "funding",
        "complete",
        "--order-id",
        str(spei_order),
        "--url",
        url,
        keys=keys,
    )
    assert deposit.returncode == 0, deposit.stderr
    await wait_for(
        lambda: db.fetchval("SELECT status = 'paid' FROM orders WHERE id = $1", spei_order)
    )

    wrong = await colmena(
        active, "trigger", "bitso", "funding", "COMPLETED", "--url", url, keys=keys
    )
    assert wrong.returncode == 2
    assert "funding statuses are pending, complete, failed" in wrong.stderr

    # An ingress that knows only Bitso's keys refuses the dev key's signature, as it must.
    bitso_only = {KEY_ID: bitso.public_key_text(stand_in_keys()[KEY_ID])}
    production = await make_client(
        settings.model_copy(update={"bitso_webhook_public_keys": bitso_only})
    )
    refused = await colmena(
        active,
        "trigger",
        "bitso",
        "payment_intent",
        "FAILED",
        "--url",
        str(production.make_url("/")),
        keys=bitso_only,
    )
    assert refused.returncode == 1
    assert "does not list the dev key 'colmena-dev'" in refused.stderr
    assert "the ingress refused the event (401)" in refused.stderr


async def test_trigger_works_against_colmena_dev(tmp_path: Path) -> None:
    port = free_port()
    process = start_dev(tmp_path, port)
    try:
        await wait_for(lambda: ready(port), timeout=60, interval=0.25)
        stack = read_dev_stack(tmp_path / ".colmena")
        assert stack is not None
        triggered = await operator(
            tmp_path, "trigger", "bitso", "payment_intent", "COMPLETED", "--id", "pi-dev-1"
        )
        assert triggered.returncode == 0, triggered.stdout + triggered.stderr
        assert "signing with the `colmena dev` key" in triggered.stderr

        async def settled() -> str | None:
            conn = await asyncpg.connect(stack.database_url)
            try:
                return await conn.fetchval(
                    "SELECT status FROM payments "
                    "WHERE provider = 'bitso' AND provider_payment_id = 'pi-dev-1'"
                )
            finally:
                await conn.close()

        assert await wait_for(settled, timeout=30, interval=0.25) == "approved"
    finally:
        output = await stop(process)
    assert process.returncode == 0, output
