"""Tenant notifications end to end: bot and plan events reach a Telegram stand-in (the Bot API's
`sendMessage` wire format) and a local receiver of signed webhooks, on a real worker, RabbitMQ
and PostgreSQL. Signatures verify with the Standard Webhooks scheme; failed attempts are retried
with backoff until they are dead, and a dead one is replayed; a tenant whose endpoint hangs does
not hold up another tenant's deliveries; the SSRF rule holds at connect time."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from colmena.actors.bots import reconcile_all, reconcile_one, runtime_of
from colmena.actors.notifications import Verdict, dispatch, judge
from colmena.config import Settings
from colmena.config.notify_settings import parse_networks
from colmena.domain.key_sealing import seal
from colmena.domain.notifications import (
    SECRET_SEAL_LABEL,
    RegistrationError,
    address_allowed,
    check_chat_id,
    check_webhook_url,
    telegram_text,
)
from colmena.gateways.tenant_webhooks import Attempt, new_secret, signature
from colmena.runtime.outbox import publish_now
from colmena.runtime.resources import Resources
from colmena.store import notifications as notify_store
from colmena.store import tenants as tenants_store
from colmena.supervisor.reconciler import Cause, Do, Step, bot_events, stale_for_long
from colmena.supervisor.restart_policy import RestartState
from colmena.supervisor.runtime import BotState, BotStatus
from colmena.supervisor.runtimes import close_runtimes
from tests.bots_support import (
    SEAL_PUBLIC_KEY,
    add_tenant,
    bearer,
    bot_of,
    bot_settings,
    resources_for,
)
from tests.conftest import wait_for
from tests.fuzz_support import capture_logs
from tests.standins.telegram import TelegramStandin
from tests.standins.webhook_receiver import SignatureInvalid, WebhookReceiver, verify

BOT_TOKEN = f"{random.randint(10**8, 10**9)}:AA{uuid.uuid4().hex}"
CHAT = 424242


# Pure rules -----------------------------------------------------------------------------------


def test_the_signature_is_the_standard_webhooks_one() -> None:
    """The Standard Webhooks specification's published test vector (Svix's documented example)."""
    assert (
        signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            b'{"test": 2432232314}',
        )
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )
    secret = new_secret()
    assert secret.startswith("whsec_") and secret != new_secret()
    headers = {
        "webhook-id": "d1",
        "webhook-timestamp": str(int(datetime.now(UTC).timestamp())),
    }
    headers["webhook-signature"] = signature(secret, "d1", int(headers["webhook-timestamp"]), b"{}")
    verify(secret, headers, b"{}")
    with pytest.raises(SignatureInvalid):
        verify(secret, headers, b'{"altered":1}')
    with pytest.raises(SignatureInvalid):
        verify(new_secret(), headers, b"{}")


def test_retries_back_off_with_jitter_honour_retry_after_and_end_dead() -> None:
    failed = Attempt(False, status=500, error="HTTP 500")
    rules = {"max_attempts": 5, "backoff_s": 1.0, "max_backoff_s": 10.0}
    low = [judge(failed, n, uniform=lambda a, b: a, **rules).retry_in_s for n in (1, 2, 3, 4)]
    assert low == [1.0, 2.0, 4.0, 8.0]  # doubling from the base, the jitter's low end
    high = judge(failed, 2, uniform=lambda a, b: b, **rules).retry_in_s
    assert high == 4.0  # the jitter stretches up to twice the delay
    assert judge(failed, 4, uniform=lambda a, b: b, **rules).retry_in_s == 10.0  # capped
    assert judge(failed, 5, **rules) == Verdict("dead")  # the last attempt
    flood = Attempt(False, status=429, retry_after_s=30)
    assert judge(flood, 1, **rules) == Verdict("retry", 30.0)  # Telegram's word, over the cap
    assert judge(Attempt(False, status=403, permanent=True), 1, **rules) == Verdict("dead")
    assert judge(Attempt(True, status=200), 5, **rules) == Verdict("delivered")


def test_events_are_changes_not_repeats() -> None:
    running = Step(Do.START, "running", "desired running, no bot")
    assert bot_events("stopped", running, running, became_unhealthy=False) == ["bot.started"]
    assert bot_events("running", running, running, became_unhealthy=False) == []
    stop = Step(Do.STOP, "stopped", "desired stopped")
    assert bot_events("running", stop, stop, became_unhealthy=False) == ["bot.stopped"]
    assert bot_events("stopped", stop, stop, became_unhealthy=False) == []
    wait = Step(Do.WAIT, "backoff", "crashed (exit 1); backoff", cause=Cause.CRASH)
    assert bot_events("running", wait, wait, became_unhealthy=False) == ["bot.crashed"]
    assert bot_events("backoff", wait, wait, became_unhealthy=False) == []  # still the same crash
    restart = Step(Do.RESTART, "running", "crashed", RestartState((), 1, False), cause=Cause.CRASH)
    assert bot_events("backoff", restart, restart, became_unhealthy=False) == ["bot.started"]
    loop = Step(Do.CRASHLOOP, "crashloop", "too many", RestartState((), 4, True), cause=Cause.CRASH)
    assert bot_events("backoff", loop, loop, became_unhealthy=False) == ["bot.crashloop"]
    again = Step(Do.CRASHLOOP, "crashloop", "too many", None, cause=Cause.CRASH)
    assert bot_events("crashloop", again, again, became_unhealthy=False) == []
    fine = Step(Do.NOTHING, "running", "no heartbeat since ...")
    assert bot_events("running", fine, fine, became_unhealthy=True) == ["bot.unhealthy"]


def test_a_bot_is_unhealthy_news_once_its_heartbeat_allowance_is_spent() -> None:
    grace, t0 = timedelta(seconds=60), datetime(2026, 1, 1, tzinfo=UTC)
    # Just started, no heartbeat yet: not news.
    assert not stale_for_long(None, None, t0, t0, grace)
    assert not stale_for_long(t0, t0, t0, t0 + timedelta(seconds=30), grace)
    # The pass that sees it cross the allowance tells, the next ones do not.
    assert stale_for_long(t0, t0 + timedelta(seconds=30), t0, t0 + timedelta(seconds=61), grace)
    assert not stale_for_long(t0, t0 + timedelta(seconds=61), t0, t0 + timedelta(seconds=90), grace)
    # Seen silent for the first time already past it (a long gap between passes): tells.
    assert stale_for_long(None, None, t0 - timedelta(seconds=70), t0, grace)
    assert not stale_for_long(t0, t0, None, t0 + timedelta(seconds=90), grace)  # beats again


def test_registration_rules() -> None:
    loopback = parse_networks("127.0.0.1/32")
    assert check_webhook_url("https://hooks.example.com/x?a=1", allow_http=False)
    for bad in ("http://hooks.example.com/", "https://user@hooks.example.com/", "ftp://x", 7):
        with pytest.raises(RegistrationError) as refused:
            check_webhook_url(bad, allow_http=False)
        assert not refused.value.forbidden
    for private in ("https://10.1.2.3/", "https://169.254.169.254/latest", "https://127.0.0.1/"):
        with pytest.raises(RegistrationError) as refused:
            check_webhook_url(private, allow_http=False)
        assert refused.value.forbidden
    with pytest.raises(RegistrationError):
        check_webhook_url("https://localhost:8443/", allow_http=False)
    assert check_webhook_url("http://127.0.0.1:9/", allow_http=True, allowed=loopback)
    assert check_webhook_url("http://localhost:9/", allow_http=True, allowed=loopback)
    import ipaddress

    assert not address_allowed(ipaddress.ip_address("::ffff:10.0.0.1"))
    assert not address_allowed(ipaddress.ip_address("fe80::1"))
    assert address_allowed(ipaddress.ip_address("93.184.216.34"))
    assert check_chat_id(-1001234567890) == "-1001234567890"
    assert check_chat_id(12.0) == "12" and check_chat_id("@colmena_ops") == "@colmena_ops"
    for bad_chat in (True, "12", "@ab", 10**16, None):
        with pytest.raises(RegistrationError):
            check_chat_id(bad_chat)
    assert "crashed" in telegram_text("bot.crashed", "t-1", {"reason": "crashed (exit 1)"})


# Services -------------------------------------------------------------------------------------


@pytest.fixture
async def telegram() -> AsyncIterator[tuple[TelegramStandin, str]]:
    standin = TelegramStandin(BOT_TOKEN, chats={CHAT})
    url = await standin.start()
    yield standin, url
    await standin.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[WebhookReceiver, str]]:
    standin = WebhookReceiver()
    url = await standin.start()
    yield standin, url
    await standin.stop()


@pytest.fixture
def active(settings: Settings, tmp_path: Path, telegram) -> Any:
    """Process runtime, both halves of the sealing pair, the Telegram stand-in, http to
    127.0.0.1 allowed, and quick retries."""
    _, telegram_url = telegram
    yield bot_settings(
        settings,
        tmp_path,
        "process",
        None,
        telegram_bot_token=SecretStr(BOT_TOKEN),
        telegram_api_url=telegram_url,
        notify_allow_http=True,
        notify_allowed_networks="127.0.0.1/32",
        notify_backoff_s=0.05,
        notify_max_backoff_s=0.2,
        notify_max_attempts=3,
        notify_timeout_s=5.0,
    )
    close_runtimes()


@pytest.fixture
async def feeder(active: Settings) -> AsyncIterator[Resources]:
    """The test's own pool and publisher (the worker's live on its own event loop)."""
    resources = resources_for(active)
    await resources.start()
    yield resources
    await resources.close()


async def register_webhook(conn: asyncpg.Connection, tenant_id: str, url: str) -> str:
    """A webhook as the API registers it (sealed to the supervisor); returns its secret."""
    secret = new_secret()
    sealed = seal(SEAL_PUBLIC_KEY, secret, tenant_id=tenant_id, provider=SECRET_SEAL_LABEL)
    await notify_store.put_endpoint(conn, tenant_id, "webhook", url, sealed_secret=sealed)
    return secret


async def emit(resources: Resources, tenant_id: str, kind: str = "bot.crashed") -> None:
    """Record an event as the reconciler does (its transaction, then publish)."""
    async with resources.pool.acquire() as conn, conn.transaction():
        rows = await notify_store.record_events(conn, tenant_id, [(kind, {"reason": "test"})])
    await publish_now(resources.pool, resources.publisher, rows)


async def deliveries(conn: asyncpg.Connection, tenant_id: str) -> list[notify_store.Delivery]:
    return await notify_store.list_deliveries(conn, tenant_id=tenant_id, limit=100)


def dead_count(channel: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "colmena_notification_deliveries_total", {"channel": channel, "outcome": "dead"}
        )
        or 0.0
    )


async def test_bot_and_plan_events_reach_telegram_and_a_signed_webhook(
    active, db, make_client, start_worker, telegram, receiver
) -> None:
    standin, _ = telegram
    hooks, hooks_url = receiver
    tenant_id, token = await add_tenant(db)
    client = await make_client(active)
    system = start_worker(settings_override=active, queues=["bots", "notifications"])
    me = bearer(token)
    assert (
        await client.put("/api/v1/notifications/telegram", json={"chat_id": CHAT}, headers=me)
    ).status == 200
    answer = await client.put(
        "/api/v1/notifications/webhook", json={"url": f"{hooks_url}/colmena"}, headers=me
    )
    assert answer.status == 200, await answer.text()
    secret = (await answer.json())["secret"]

    async def arrived(kind: str) -> bool:
        bodies = [json.loads(r.body) for r in hooks.at("/colmena")]
        texts = [m["text"] for m in standin.sent]
        word = kind.split(".")[1].replace("_", " ")
        return any(b["type"] == kind for b in bodies) and any(word in t for t in texts)

    assert (await client.post("/api/v1/bot/start", headers=me)).status == 202
    await wait_for(lambda: arrived("bot.started"), timeout=30)
    assert (await client.post("/api/v1/bot/stop", headers=me)).status == 202
    await wait_for(lambda: arrived("bot.stopped"), timeout=30)
    system.broker.get_actor("apply_plan").send(
        tenant_id, "pro", True, "subscription:sub_n", datetime.now(UTC).isoformat()
    )
    await wait_for(lambda: arrived("plan.changed"), timeout=30)

    for request in hooks.at("/colmena"):
        verify(secret, request.headers, request.body)  # every one signed with the tenant's secret
        assert json.loads(request.body)["tenant"] == tenant_id
    assert all(m["chat_id"] == CHAT for m in standin.sent)
    plan = next(json.loads(r.body) for r in hooks.at("/colmena") if b"plan.changed" in r.body)
    assert plan["data"]["from"] == "free" and plan["data"]["to"] == "pro"

    async def all_delivered() -> list[notify_store.Delivery] | None:
        found = await deliveries(db, tenant_id)
        return found if found and all(d.status == "delivered" for d in found) else None

    found = await wait_for(all_delivered)
    # One delivery per event and endpoint, and the webhook-id is the delivery's id.
    assert len({(d.event_id, d.channel) for d in found}) == len(found) == 6
    assert {r.headers["webhook-id"] for r in hooks.at("/colmena")} == {
        str(d.id) for d in found if d.channel == "webhook"
    }
    assert BOT_TOKEN not in (await _logs_of(db))


async def _logs_of(conn: asyncpg.Connection) -> str:
    """What the database holds about deliveries: never the token or a secret."""
    rows = await conn.fetch("SELECT d::text FROM notification_deliveries d")
    return "\n".join(row[0] for row in rows)


async def test_failed_attempts_are_retried_with_backoff_until_delivered(
    active, db, start_worker, feeder, receiver
) -> None:
    hooks, hooks_url = receiver
    hooks.modes["/flaky"] = "fail"
    hooks.failures["/flaky"] = 2
    tenant_id, _ = await add_tenant(db)
    secret = await register_webhook(db, tenant_id, f"{hooks_url}/flaky")
    start_worker(settings_override=active, queues=["notifications"])
    await emit(feeder, tenant_id)

    async def delivered() -> notify_store.Delivery | None:
        await dispatch(feeder)  # what the notifications-dispatch job does every second
        [delivery] = await deliveries(db, tenant_id)
        return delivery if delivery.status == "delivered" else None

    delivery = await wait_for(delivered)
    assert delivery.attempts == 3 and delivery.last_status == 204
    attempts = hooks.at("/flaky")
    assert len(attempts) == 3
    assert {a.headers["webhook-id"] for a in attempts} == {str(delivery.id)}
    for attempt in attempts:
        verify(secret, attempt.headers, attempt.body)


async def test_a_delivery_that_keeps_failing_is_dead_until_replayed(
    active, db, start_worker, feeder, receiver, telegram
) -> None:
    hooks, hooks_url = receiver
    standin, _ = telegram
    hooks.modes["/down"] = "fail"  # 500 until told otherwise
    tenant_id, _ = await add_tenant(db)
    await register_webhook(db, tenant_id, f"{hooks_url}/down")
    standin.blocked.add(-100777)
    await notify_store.put_endpoint(db, tenant_id, "telegram", "-100777")
    dead_before = dead_count("webhook"), dead_count("telegram")
    start_worker(settings_override=active, queues=["notifications"])
    with capture_logs() as logs:
        await emit(feeder, tenant_id)

        async def both_dead() -> list[notify_store.Delivery] | None:
            await dispatch(feeder)
            found = await deliveries(db, tenant_id)
            return found if len(found) == 2 and all(d.status == "dead" for d in found) else None

        found = {d.channel: d for d in await wait_for(both_dead)}

        async def logged() -> list[dict[str, Any]] | None:
            lines = [json.loads(line) for line in logs.text().splitlines() if line[:1] == "{"]
            dead = [line for line in lines if line["event"].startswith("notification dead")]
            return dead if len(dead) == 2 else None

        dead_lines = await wait_for(logged)  # written just after the commit the test saw
    assert {line["channel"] for line in dead_lines} == {"webhook", "telegram"}
    assert all(line["tenant_id"] == tenant_id for line in dead_lines)
    assert found["webhook"].attempts == 3 and found["webhook"].last_error == "HTTP 500"
    # Telegram's 403 (bot blocked) cannot heal: dead at the first attempt.
    assert found["telegram"].attempts == 1
    assert found["telegram"].last_error == "Forbidden: bot was blocked by the user"
    assert (dead_count("webhook"), dead_count("telegram")) == (
        dead_before[0] + 1,
        dead_before[1] + 1,
    )
    assert BOT_TOKEN not in logs.text()

    hooks.modes["/down"] = "ok"
    async with feeder.pool.acquire() as conn, conn.transaction():
        outcome, rows = await notify_store.replay(conn, found["webhook"].id, tenant_id=tenant_id)
    assert outcome == "replayed"
    await publish_now(feeder.pool, feeder.publisher, rows)

    async def replayed() -> notify_store.Delivery | None:
        current = await notify_store.get_delivery(db, found["webhook"].id, tenant_id=tenant_id)
        return current if current and current.status == "delivered" else None

    done = await wait_for(replayed)
    assert done.replays == 1 and done.attempts == 1
    assert len(hooks.at("/down")) == 4


async def test_telegram_flood_control_is_waited_out(
    active, db, start_worker, feeder, telegram
) -> None:
    standin, _ = telegram
    standin.flood[CHAT] = 1  # one 429 with retry_after 1, then fine
    tenant_id, _ = await add_tenant(db)
    await notify_store.put_endpoint(db, tenant_id, "telegram", str(CHAT))
    start_worker(settings_override=active, queues=["notifications"])
    await emit(feeder, tenant_id, "bot.unhealthy")

    async def after_the_429() -> notify_store.Delivery | None:
        [delivery] = await deliveries(db, tenant_id)
        return delivery if delivery.status == "pending" and delivery.attempts == 1 else None

    waiting = await wait_for(after_the_429)
    # Telegram's retry_after (1 s) from the attempt, which came after the event was recorded;
    # the backoff alone would be 0.05 to 0.2 s.
    assert (waiting.next_attempt_at - waiting.created_at).total_seconds() >= 1.0

    async def delivered() -> bool:
        await dispatch(feeder)
        [delivery] = await deliveries(db, tenant_id)
        return delivery.status == "delivered"

    await wait_for(delivered)
    assert len(standin.requests) == 2 and "heartbeats" in standin.sent[0]["text"]


async def test_a_hanging_endpoint_does_not_delay_another_tenant(
    active, db, start_worker, feeder, receiver
) -> None:
    hooks, hooks_url = receiver
    hooks.modes["/a"] = "hang"
    slow = active.model_copy(update={"notify_tenant_concurrency": 1, "notify_timeout_s": 30.0})
    tenant_a, _ = await add_tenant(db)
    tenant_b, _ = await add_tenant(db)
    await register_webhook(db, tenant_a, f"{hooks_url}/a")
    await register_webhook(db, tenant_b, f"{hooks_url}/b")
    start_worker(settings_override=slow, queues=["notifications"], threads=2)
    try:
        for _ in range(3):
            await emit(feeder, tenant_a)
        for _ in range(3):
            await emit(feeder, tenant_b)

        async def b_arrived() -> bool:
            return len(hooks.at("/b")) == 3

        await wait_for(b_arrived)
        # B's three arrived while A's first still hangs: A holds one worker thread (its limit),
        # its other two wait their turn without a thread and without a request.
        assert hooks.hanging == 1 and len(hooks.at("/a")) == 1
        states = sorted(d.status for d in await deliveries(db, tenant_a))
        assert states == ["in_flight", "pending", "pending"]
    finally:
        hooks.release()

    async def a_caught_up() -> bool:
        found = await deliveries(db, tenant_a)
        return len(hooks.at("/a")) == 3 and all(d.status == "delivered" for d in found)

    await wait_for(a_caught_up)  # each freed slot handed to A's next delivery


async def test_a_name_that_resolves_to_loopback_is_refused_when_connecting(
    active, db, start_worker, feeder, receiver
) -> None:
    """Registered while loopback was allowed; the worker, without the allow-list, checks the
    addresses the name resolves to on connecting and sends nothing."""
    hooks, hooks_url = receiver
    port = hooks_url.rsplit(":", 1)[1]
    tenant_id, _ = await add_tenant(db)
    await register_webhook(db, tenant_id, f"http://localhost:{port}/ssrf")
    strict = active.model_copy(update={"notify_allowed_networks": ""})
    start_worker(settings_override=strict, queues=["notifications"])
    await emit(feeder, tenant_id)

    async def dead() -> notify_store.Delivery | None:
        [delivery] = await deliveries(db, tenant_id)
        return delivery if delivery.status == "dead" else None

    delivery = await wait_for(dead)
    assert delivery.attempts == 1 and delivery.last_error == "destination address not allowed"
    assert hooks.at("/ssrf") == []


async def test_a_crash_and_the_crashloop_it_ends_in_reach_the_webhook_once_each(
    active, db, start_worker, feeder, receiver
) -> None:
    """The reconciler's own passes (a real local bot process, killed from outside) record the
    events; a pass that sees the same crashloop again sends nothing more."""
    hooks, hooks_url = receiver
    tenant_id, _ = await add_tenant(db)
    secret = await register_webhook(db, tenant_id, f"{hooks_url}/bot")
    start_worker(settings_override=active, queues=["notifications"])
    await tenants_store.set_desired(db, tenant_id, "running", reset_restarts=True)
    await reconcile_one(feeder, tenant_id)
    runtime = await runtime_of(active)

    async def running() -> BotStatus | None:
        bot = await asyncio.to_thread(bot_of, runtime, tenant_id)
        return bot if bot is not None and bot.state is BotState.RUNNING else None

    for _ in range(active.bot_restart_max + 1):
        bot = await wait_for(running, timeout=30)
        os.kill(runtime.pid(tenant_id), signal.SIGKILL)

        async def acted(bot_id: str = bot.bot_id) -> bool:
            await reconcile_all(feeder)
            row = await tenants_store.get_bot(db, tenant_id)
            current = await asyncio.to_thread(bot_of, runtime, tenant_id)
            return row is not None and (
                row.crashloop or (current is not None and current.bot_id != bot_id)
            )

        await wait_for(acted, timeout=20)
    assert (await reconcile_all(feeder))["crashloop"] == 1  # seen again: no new event

    def kinds() -> list[str]:
        return [json.loads(r.body)["type"] for r in hooks.at("/bot")]

    async def crashloop_arrived() -> bool:
        return "bot.crashloop" in kinds()

    await wait_for(crashloop_arrived)
    events = [json.loads(r.body) for r in hooks.at("/bot")]
    # Deliveries of one tenant may overtake each other (two in flight): count, not order.
    # One per change, not one per pass: the first start and each restart after its backoff,
    # each crash the restart policy backed off from, and the crash that made the crashloop.
    restarts = active.bot_restart_max
    assert Counter(kinds()) == {
        "bot.started": 1 + restarts,
        "bot.crashed": restarts,
        "bot.crashloop": 1,
    }
    crashes = [e for e in events if e["type"] == "bot.crashed"]
    assert all(e["data"]["exit_code"] == 137 and "crashed" in e["data"]["reason"] for e in crashes)
    for request in hooks.at("/bot"):
        verify(secret, request.headers, request.body)

    async def all_delivered() -> bool:
        found = await deliveries(db, tenant_id)
        return all(d.status == "delivered" for d in found) and len(found) == len(events)

    await wait_for(all_delivered)
