"""Operator commands against a live system: trigger, payments show, dlq, reconcile."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from pydantic import SecretStr

from colmena.gateways import sample_events as events
from tests.conftest import queue_counts, wait_for
from tests.payments_support import (
    LICENSE_METADATA,
    MP_SECRET,
    MP_TOKEN,
    STRIPE_SECRET,
    mercadopago_post_args,
)
from tests.standins.mercadopago import MercadoPagoStandin, payment_object


@pytest.fixture
async def mp_api():
    standin = MercadoPagoStandin(MP_TOKEN)
    await standin.start()
    yield standin
    await standin.stop()


@pytest.fixture
def pay_settings(settings, mp_api):
    return settings.model_copy(
        update={
            "stripe_webhook_secrets": SecretStr(STRIPE_SECRET),
            "mercadopago_webhook_secret": SecretStr(MP_SECRET),
            "mercadopago_access_token": SecretStr(MP_TOKEN),
            "mercadopago_api_url": mp_api.url,
        }
    )


async def colmena(pay_settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("COLMENA_")}
    env.update(
        {
            "COLMENA_DATABASE_URL": pay_settings.require_database_url(),
            "COLMENA_BROKER_URL": pay_settings.require_broker_url(),
            "COLMENA_QUEUE_PREFIX": pay_settings.queue_prefix,
            "COLMENA_STRIPE_WEBHOOK_SECRETS": STRIPE_SECRET,
            "COLMENA_MERCADOPAGO_WEBHOOK_SECRET": MP_SECRET,
            "COLMENA_MERCADOPAGO_ACCESS_TOKEN": MP_TOKEN,
            "COLMENA_MERCADOPAGO_API_URL": pay_settings.mercadopago_api_url,
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


async def test_trigger_then_payments_show(pay_settings, start_worker, make_client, db) -> None:
    start_worker(settings_override=pay_settings, queues=["payments"])
    client = await make_client(pay_settings)
    url = str(client.make_url("/webhooks/stripe"))
    sent = await colmena(
        pay_settings,
        "trigger",
        "stripe",
        "payment_intent.succeeded",
        "--payment-id",
        "pi_cli_1",
        "--amount",
        "99900",
        "--url",
        url,
    )
    assert sent.returncode == 0, sent.stderr
    assert "-> 200" in sent.stdout
    await wait_for(
        lambda: db.fetchval(
            "SELECT status = 'approved' FROM payments WHERE provider_payment_id = 'pi_cli_1'"
        )
    )

    refund = await colmena(
        pay_settings,
        "trigger",
        "stripe",
        "charge.refunded",
        "--payment-id",
        "pi_cli_1",
        "--amount",
        "99900",
        "--url",
        url,
    )
    assert refund.returncode == 0, refund.stderr
    await wait_for(
        lambda: db.fetchval(
            "SELECT status = 'refunded' FROM payments WHERE provider_payment_id = 'pi_cli_1'"
        )
    )

    shown = await colmena(pay_settings, "payments", "show", "stripe", "pi_cli_1", "--json")
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert (
        document["status"],
        document["amount"],
        document["amount_minor"],
        document["currency"],
    ) == ("refunded", "999.00", 99900, "MXN")
    assert [event["status"] for event in document["events"]] == ["approved", "refunded"]
    text = await colmena(pay_settings, "payments", "show", "stripe", "pi_cli_1")
    assert "         amount: 999.00 MXN\n" in text.stdout

    listed = await colmena(pay_settings, "payments", "list")
    [row] = [line for line in listed.stdout.splitlines() if "pi_cli_1" in line]
    assert " 999.00 MXN " in row
    assert "99900" not in row
    missing = await colmena(pay_settings, "payments", "show", "stripe", "pi_nope")
    assert missing.returncode == 1
    assert "no stripe payment pi_nope" in missing.stderr


async def test_trigger_reports_an_unreachable_ingress(pay_settings) -> None:
    result = await colmena(
        pay_settings,
        "trigger",
        "stripe",
        "payment_intent.succeeded",
        "--url",
        "http://127.0.0.1:1/webhooks/stripe",
    )
    assert result.returncode == 1
    assert "cannot reach the ingress" in result.stderr
    assert "Traceback" not in result.stderr


async def test_dead_letter_is_listed_then_requeued_and_settles(
    pay_settings, start_worker, make_client, db, mp_api
) -> None:
    start_worker(settings_override=pay_settings, queues=["payments"])
    client = await make_client(pay_settings)
    response = await client.post(
        "/webhooks/mercadopago",
        **mercadopago_post_args(events.mercadopago_notification("1319555000")),
    )
    assert response.status == 200
    dead = pay_settings.queue_prefix + "payments"
    await wait_for(lambda: asyncio.to_thread(lambda: queue_counts(dead)[2] == 1))

    listed = await colmena(pay_settings, "dlq", "list", "--queue", "payments", "--json")
    letters = json.loads(listed.stdout)
    assert [letter["actor"] for letter in letters] == ["settle_mercadopago_notification"]
    assert "not found" in letters[0]["error"]
    assert queue_counts(dead)[2] == 1, "listing must not consume dead letters"

    shown = await colmena(
        pay_settings, "dlq", "show", "--queue", "payments", "--id", letters[0]["message_id"]
    )
    assert json.loads(shown.stdout)["message_id"] == letters[0]["message_id"]

    mp_api.put(payment_object(payment_id=1319555000, status="approved", metadata=LICENSE_METADATA))
    requeued = await colmena(pay_settings, "dlq", "requeue", "--queue", "payments")
    assert "requeued 1 message(s)" in requeued.stdout
    await wait_for(
        lambda: db.fetchval(
            "SELECT status = 'approved' FROM payments WHERE provider_payment_id = '1319555000'"
        )
    )
    assert queue_counts(dead)[2] == 0


async def test_reconcile_settles_missed_payments_once(
    pay_settings, start_worker, db, mp_api
) -> None:
    start_worker(settings_override=pay_settings, queues=["payments"])
    for _ in range(3):
        mp_api.put(payment_object(status="approved"))
    first = await colmena(pay_settings, "reconcile", "mercadopago", "--since", "1h")
    assert first.returncode == 0, first.stderr
    assert "checked 3 payment(s); 3 queued" in first.stdout
    await wait_for(
        lambda: db.fetchval("SELECT count(*) = 3 FROM payments WHERE status = 'approved'")
    )
    second = await colmena(pay_settings, "reconcile", "mercadopago", "--since", "1h")
    assert "0 queued for settling, 3 already up to date" in second.stdout
    bad = await colmena(pay_settings, "reconcile", "mercadopago", "--since", "yesterday")
    assert bad.returncode == 2
    assert "--since" in bad.stderr
