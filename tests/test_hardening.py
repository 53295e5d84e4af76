"""The ingress's edges, on the real ingress and services: only signed values name a webhook,
timestamps outside the tolerance either way are refused, a body has a deadline, every answer
carries the security headers and no versions, /metrics has a listener of its own, and the admin
token is long and cannot be guessed at speed."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from pydantic import SecretStr

from colmena.config import Settings
from colmena.gateways import mercadopago
from colmena.gateways import sample_events as events
from colmena.http.health import metrics_app
from tests import ops_support
from tests.bots_support import ADMIN_TOKEN
from tests.conftest import wait_for
from tests.ops_support import colmena_env, free_port, scrape, value
from tests.payments_support import (
    MP_SECRET,
    STRIPE_SECRET,
    mercadopago_post_args,
    stored_counts,
    stripe_post_args,
)

spawn = ops_support.spawn
STRIPE_ROUTE = "/webhooks/stripe"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def security_events(reason: str) -> float:
    return sample("colmena_security_events_total", reason=reason)


def answered(route: str, status: str) -> float:
    return sample("colmena_http_requests_total", route=route, method="POST", status=status)


@pytest.fixture
def pay_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "stripe_webhook_secrets": SecretStr(STRIPE_SECRET),
            "mercadopago_webhook_secret": SecretStr(MP_SECRET),
            "body_read_timeout_s": 1.0,
        }
    )


@pytest.fixture
async def pay_client(make_client, pay_settings: Settings) -> TestClient:
    return await make_client(pay_settings)


# 1. Mercado Pago: the signed values are the event ---------------------------------------------


async def test_signed_mercadopago_headers_replayed_with_other_bodies_store_one_event(
    pay_client, db
) -> None:
    notification = events.mercadopago_notification("1319000042")
    signed = mercadopago_post_args(notification)
    bodies = [
        {**notification, "id": number, "action": action, "date_created": f"2026-01-0{number}"}
        for number, action in enumerate(
            ["payment.updated", "payment.created", "payment.updated", "x", "y"], start=1
        )
    ]
    answers = []
    for body in bodies:
        response = await pay_client.post(
            "/webhooks/mercadopago", **{**signed, "data": json.dumps(body).encode()}
        )
        answers.append((response.status, (await response.json())["duplicate"]))

    assert answers == [(200, False)] + [(200, True)] * 4
    assert await stored_counts(db) == (1, 1, 0)  # one inbox row, one message, one API call


async def test_a_body_disagreeing_with_the_signed_data_id_is_refused(pay_client, db) -> None:
    signed = mercadopago_post_args(events.mercadopago_notification("1319000043"))
    other = events.mercadopago_notification("1319000999")
    before = security_events("webhook_data_id_mismatch")

    response = await pay_client.post(
        "/webhooks/mercadopago", **{**signed, "data": json.dumps(other).encode()}
    )

    assert response.status == 400
    assert (await response.json())["error"]["code"] == "data_id_mismatch"
    assert security_events("webhook_data_id_mismatch") == before + 1
    assert await stored_counts(db) == (0, 0, 0)


async def test_a_fresh_ts_in_front_of_an_old_signature_does_not_renew_it(pay_client, db) -> None:
    notification = events.mercadopago_notification("1319000044")
    stale = mercadopago_post_args(notification, ts=int(time.time()) - 4000)
    header = f"ts={int(time.time())},{stale['headers']['x-signature']}"

    response = await pay_client.post(
        "/webhooks/mercadopago", **{**stale, "headers": {**stale["headers"], "x-signature": header}}
    )

    assert response.status == 401
    assert await stored_counts(db) == (0, 0, 0)


async def test_signed_notification_names_what_was_signed() -> None:
    header = mercadopago.sign(data_id="abc", request_id="r-1", secret=MP_SECRET, ts=1_700_000_000)
    signed = mercadopago.verify_signature(
        x_signature=header,
        x_request_id=" r-1 ",
        data_id="ABC",
        secrets=[MP_SECRET],
        tolerance_s=300,
        now=1_700_000_000,
    )
    assert signed.manifest == "id:abc;request-id:r-1;ts:1700000000;"


# 2. Stripe: the future is outside the tolerance too --------------------------------------------


async def test_a_stripe_event_signed_ten_years_ahead_is_refused(pay_client, db) -> None:
    event = events.stripe_event("payment_intent.succeeded", events.payment_intent())
    ahead = int(time.time()) + 10 * 365 * 86_400
    before = security_events("webhook_invalid_signature")

    response = await pay_client.post(STRIPE_ROUTE, **stripe_post_args(event, timestamp=ahead))

    assert response.status == 401
    assert (await response.json())["error"]["code"] == "invalid_signature"
    assert security_events("webhook_invalid_signature") == before + 1
    assert await stored_counts(db) == (0, 0, 0)


async def test_a_stripe_event_a_minute_ahead_is_within_the_tolerance(pay_client, db) -> None:
    event = events.stripe_event("payment_intent.succeeded", events.payment_intent())
    args = stripe_post_args(event, timestamp=int(time.time()) + 60)
    assert (await pay_client.post(STRIPE_ROUTE, **args)).status == 200


# 3. Slow and broken bodies ---------------------------------------------------------------------


def _request_head(length: int) -> bytes:
    return (
        f"POST {STRIPE_ROUTE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def test_a_trickled_body_is_answered_408_at_the_deadline(pay_client, db) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", pay_client.port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer.write(_request_head(1000) + b"{")
    answer = b""
    async with asyncio.timeout(15):
        while not answer:  # a byte whenever the server has not answered within 0.2 s
            try:
                answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 0.2)
            except TimeoutError:
                writer.write(b" ")
                await writer.drain()
        elapsed = loop.time() - started
        length = int(answer.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
    writer.close()

    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"\r\nConnection: close\r\n" in answer
    assert json.loads(body)["error"]["code"] == "body_timeout"
    assert 1.0 <= elapsed < 5.0, elapsed  # the deadline is 1 s, however alive the client is
    assert await stored_counts(db) == (0, 0, 0)


async def test_a_client_gone_mid_body_is_an_abort_not_an_error(settings, spawn) -> None:
    # The ingress process itself: aiohttp's test server cancels handlers of lost connections,
    # which `colmena ingress` does not.
    port, metrics_port = free_port(), free_port()
    ingress = spawn(
        "ingress",
        ["ingress"],
        colmena_env(
            settings,
            COLMENA_HTTP_PORT=str(port),
            COLMENA_INGRESS_METRICS_PORT=str(metrics_port),
        ),
    )
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    await wait_for(lambda: scrape(metrics_url), timeout=60, interval=0.2)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_request_head(1000) + b'{"id": "evt_')
    await writer.drain()

    async def metric(name: str, **labels: str) -> float:
        return value(await scrape(metrics_url) or "", name, **labels) or 0.0

    async def reading_the_body() -> bool:
        return await metric("colmena_http_requests_in_flight") == 1

    await wait_for(reading_the_body, timeout=10)
    writer.transport.abort()

    async def counted() -> bool:
        return await metric("colmena_http_requests_total", route=STRIPE_ROUTE, status="499") == 1

    await wait_for(counted, timeout=10)
    assert await metric("colmena_http_client_aborts_total", route=STRIPE_ROUTE) == 1
    assert await metric("colmena_http_requests_total", status="500") == 0
    lines = [json.loads(line) for line in ingress.output().splitlines() if line.startswith("{")]
    assert [line["level"] for line in lines if "went away" in line["event"]] == ["info"]
    assert not [line for line in lines if line["event"] == "unhandled error"]
    assert "Traceback" not in ingress.output()


# 4. Headers and exposure -----------------------------------------------------------------------


async def test_every_answer_carries_the_security_headers_and_no_versions(client) -> None:
    for method, path in (("GET", "/healthz"), ("GET", "/no-such-page"), ("DELETE", "/healthz")):
        response = await client.request(method, path)
        headers = response.headers
        assert headers["Strict-Transport-Security"].startswith("max-age="), path
        assert "camera=()" in headers["Permissions-Policy"], path
        assert headers["Server"] == "colmena", (path, headers["Server"])
        assert headers["X-Content-Type-Options"] == "nosniff", path


async def test_metrics_are_served_by_the_metrics_listener_only(client) -> None:
    assert (await client.get("/metrics")).status == 404
    async with TestClient(TestServer(metrics_app(client.app), host="127.0.0.1")) as listener:
        response = await listener.get("/metrics")
        assert response.status == 200
        assert response.content_type == "text/plain"
        assert response.headers["Server"] == "colmena"
        assert "colmena_outbox_pending" in await response.text()


async def test_the_ingress_process_serves_metrics_on_their_own_port(settings, spawn) -> None:
    port, metrics_port = free_port(), free_port()
    ingress = spawn(
        "ingress",
        ["ingress"],
        colmena_env(
            settings,
            COLMENA_HTTP_PORT=str(port),
            COLMENA_INGRESS_METRICS_PORT=str(metrics_port),
        ),
    )
    text = await wait_for(
        lambda: scrape(f"http://127.0.0.1:{metrics_port}/metrics"), timeout=60, interval=0.2
    )
    assert "colmena_http_requests_total" in text, ingress.output()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as public:
            assert public.status == 404
            assert public.headers["Server"] == "colmena"
        async with session.get(f"http://127.0.0.1:{port}/healthz") as health:
            assert health.status == 200


def _run_ingress(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "colmena", "ingress"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_busy_metrics_port_is_one_line_and_exit_2(settings, tmp_path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        held = holder.getsockname()[1]
        result = _run_ingress(
            colmena_env(settings, COLMENA_INGRESS_METRICS_PORT=str(held)), tmp_path
        )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"colmena: port {held} on 127.0.0.1 is in use (COLMENA_INGRESS_METRICS_PORT): "
        "stop what holds it or set another"
    )


# 6. The admin token ----------------------------------------------------------------------------


def test_a_short_admin_token_is_one_line_and_exit_2(settings, tmp_path) -> None:
    short = "admin-" + "x" * 20
    result = _run_ingress(colmena_env(settings, COLMENA_BOT_ADMIN_TOKEN=short), tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "COLMENA_BOT_ADMIN_TOKEN" in lines[0] and "at least 32 characters" in lines[0]
    assert short not in result.stderr


async def test_guessing_the_admin_token_is_throttled_and_counted(settings, make_client) -> None:
    limited = {"bot_admin_token": SecretStr(ADMIN_TOKEN), "rate_limit_preset": "burst"}
    client = await make_client(settings.model_copy(update=limited))  # the default limits
    invalid = security_events("admin_token_invalid")
    statuses = []
    for attempt in range(20):
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}-{attempt}"}
        response = await client.get("/api/v1/admin/bots", headers=headers)
        statuses.append(response.status)
        if response.status == 429:
            assert int(response.headers["Retry-After"]) >= 1
            break

    assert statuses[-1] == 429, statuses
    assert set(statuses[:-1]) == {401} and len(statuses) <= 11, statuses
    assert security_events("admin_token_invalid") == invalid + len(statuses) - 1
    right = await client.get(
        "/api/v1/admin/bots", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert right.status == 429  # locked out: the right token is not even compared
