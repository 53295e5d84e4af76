"""The tenant API of notifications: every operation as documented, tenants kept apart, the
webhook secret shown once and stored only sealed, private destinations refused, and the
operator's `colmena notifications list|replay`."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner
from prometheus_client import REGISTRY

from colmena.cli import cli
from colmena.config import Settings
from colmena.domain.key_sealing import open_sealed
from colmena.domain.notifications import SECRET_SEAL_LABEL
from colmena.store import notifications as notify_store
from colmena.store.pool import connect
from colmena.supervisor.runtimes import close_runtimes
from tests.bots_support import SEAL_PRIVATE_KEY, add_tenant, bearer, bot_settings
from tests.conftest import queue_counts
from tests.fuzz_support import capture_logs
from tests.test_openapi import Checked

BASE = "/api/v1/notifications"
WEBHOOK, TELEGRAM = f"{BASE}/webhook", f"{BASE}/telegram"
DELIVERIES, REPLAY = f"{BASE}/deliveries", f"{BASE}/deliveries/{{delivery_id}}/replay"


@pytest.fixture
def active(settings: Settings, tmp_path: Path):
    yield bot_settings(
        settings,
        tmp_path,
        "process",
        None,
        notify_allow_http=True,
        notify_allowed_networks="127.0.0.1/32",
    )
    close_runtimes()


async def dead_delivery(conn: asyncpg.Connection, tenant_id: str) -> uuid.UUID:
    """A webhook delivery that died, as a worker leaves one after its last attempt."""
    if not await notify_store.endpoints(conn, tenant_id):
        await notify_store.put_endpoint(
            conn, tenant_id, "webhook", "http://127.0.0.1:9/x", sealed_secret="v1.sealed"
        )
    async with conn.transaction():
        rows = await notify_store.record_events(conn, tenant_id, [("bot.crashed", {})])
    delivery_id = uuid.UUID(rows[0].args[0])  # one per endpoint: the first dies
    async with conn.transaction():
        claimed = await notify_store.claim(conn, delivery_id, limit=5, lease_s=30)
        assert isinstance(claimed, notify_store.Claimed)
        await notify_store.finish(conn, claimed, "dead", limit=5, error="HTTP 500", status=500)
    return delivery_id


async def test_every_notification_operation_answers_as_documented(active, db, make_client) -> None:
    tenant_id, token = await add_tenant(db)
    client = await make_client(active)
    api, me = Checked(client), bearer(token)

    status, empty = await api.call(BASE, "GET", headers=me)
    assert status == 200 and empty == {"telegram": None, "webhook": None}
    assert (await api.call(TELEGRAM, "PUT", json={"chat_id": -1001234567890}, headers=me))[0] == 200
    assert (await api.call(TELEGRAM, "PUT", json={"chat_id": "@ab"}, headers=me))[0] == 422
    assert (await api.call(TELEGRAM, "PUT", json={"chat": 1}, headers=me))[0] == 422
    status, hook = await api.call(WEBHOOK, "PUT", json={"url": "http://127.0.0.1:9/h"}, headers=me)
    assert status == 200 and hook["secret"].startswith("whsec_")
    assert (await api.call(WEBHOOK, "PUT", json={"url": "https://10.0.0.7/h"}, headers=me))[
        0
    ] == 403
    assert (await api.call(WEBHOOK, "PUT", json={"url": "ftp://x"}, headers=me))[0] == 422
    assert (await api.call(WEBHOOK, "PUT", data=b"{not json", headers=me))[0] == 400
    status, both = await api.call(BASE, "GET", headers=me)
    assert both["telegram"]["chat_id"] == -1001234567890
    assert both["webhook"]["url"] == "http://127.0.0.1:9/h" and "secret" not in both["webhook"]

    dead = await dead_delivery(db, tenant_id)
    status, page = await api.call(DELIVERIES, "GET", f"{DELIVERIES}?status=dead", headers=me)
    assert status == 200 and [d["id"] for d in page["deliveries"]] == [str(dead)]
    assert page["deliveries"][0]["last_error"] == "HTTP 500"
    assert (await api.call(DELIVERIES, "GET", f"{DELIVERIES}?limit=0", headers=me))[0] == 400
    assert (await api.call(DELIVERIES, "GET", f"{DELIVERIES}?cursor=x", headers=me))[0] == 400
    replay = f"{DELIVERIES}/{dead}/replay"
    status, replayed = await api.call(REPLAY, "POST", replay, headers=me)
    assert status == 202 and replayed["status"] == "pending" and replayed["replays"] == 1
    assert (await api.call(REPLAY, "POST", replay, headers=me))[0] == 409  # pending, not dead
    assert (await api.call(REPLAY, "POST", f"{DELIVERIES}/{uuid.uuid4()}/replay", headers=me))[
        0
    ] == 404
    for path in (TELEGRAM, WEBHOOK):
        assert (await api.call(path, "DELETE", headers=me))[0] == 204
        assert (await api.call(path, "DELETE", headers=me))[0] == 404
    assert (await api.call(BASE, "GET"))[0] == 401
    api.assert_covers("notifications")


async def test_pages_go_back_in_time_with_the_cursor(active, db, make_client) -> None:
    tenant_id, token = await add_tenant(db)
    client = await make_client(active)
    made = [await dead_delivery(db, tenant_id) for _ in range(5)]
    seen, cursor = [], None
    while True:
        query = f"?limit=2&cursor={cursor}" if cursor else "?limit=2"
        page = await (await client.get(DELIVERIES + query, headers=bearer(token))).json()
        seen += [d["id"] for d in page["deliveries"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [str(d) for d in reversed(made)]


async def test_another_tenants_deliveries_cannot_be_seen_or_replayed(
    active, db, make_client
) -> None:
    tenant_a, _ = await add_tenant(db)
    _, token_b = await add_tenant(db)
    client = await make_client(active)
    theirs = await dead_delivery(db, tenant_a)
    b = bearer(token_b)

    listed = await (await client.get(DELIVERIES, headers=b)).json()
    assert listed == {"deliveries": [], "next_cursor": None}
    # A's id as B's cursor is no way in either: an empty page.
    paged = await (await client.get(f"{DELIVERIES}?cursor={theirs}", headers=b)).json()
    assert paged["deliveries"] == []
    answer = await client.post(f"{DELIVERIES}/{theirs}/replay", headers=b)
    assert answer.status == 404
    assert (await answer.json())["error"]["code"] == "not_found"
    still = await notify_store.get_delivery(db, theirs, tenant_id=tenant_a)
    assert still is not None and still.status == "dead" and still.replays == 0
    assert (await notify_store.get_delivery(db, theirs, tenant_id="someone-else")) is None


async def test_the_secret_is_shown_once_and_stored_only_sealed(active, db, make_client) -> None:
    tenant_id, token = await add_tenant(db)
    client = await make_client(active)
    me = bearer(token)
    first = await (
        await client.put(WEBHOOK, json={"url": "http://127.0.0.1:9/a"}, headers=me)
    ).json()
    second = await (
        await client.put(WEBHOOK, json={"url": "http://127.0.0.1:9/b"}, headers=me)
    ).json()
    assert first["secret"] != second["secret"]  # every PUT makes a new one
    listed = await (await client.get(BASE, headers=me)).text()
    assert second["secret"] not in listed and first["secret"] not in listed

    rows = await db.fetch("SELECT * FROM notification_endpoints WHERE tenant_id = $1", tenant_id)
    assert len(rows) == 1 and rows[0]["target"] == "http://127.0.0.1:9/b"  # changed in place
    dumped = "\n".join(str(dict(row)) for row in rows)
    key = second["secret"].removeprefix("whsec_")
    assert key not in dumped and key[:16] not in dumped
    # Only the supervisor side's private key opens it, and only for this tenant.
    sealed = rows[0]["sealed_secret"]
    opened = open_sealed(SEAL_PRIVATE_KEY, sealed, tenant_id=tenant_id, provider=SECRET_SEAL_LABEL)
    assert opened == second["secret"]
    with pytest.raises(Exception, match="does not open"):
        open_sealed(SEAL_PRIVATE_KEY, sealed, tenant_id="t-other", provider=SECRET_SEAL_LABEL)


async def test_private_destinations_and_plain_http_are_refused_and_change_nothing(
    active, db, make_client
) -> None:
    tenant_id, token = await add_tenant(db)
    strict = active.model_copy(update={"notify_allow_http": False, "notify_allowed_networks": ""})
    client = await make_client(strict)

    def refused() -> float:
        return (
            REGISTRY.get_sample_value(
                "colmena_security_events_total", {"reason": "notify_destination_refused"}
            )
            or 0.0
        )

    before = refused()
    with capture_logs() as logs:
        for url in (
            "https://127.0.0.1/x",
            "https://169.254.169.254/latest/meta-data",
            "https://192.168.1.10/",
            "https://localhost/",
        ):
            answer = await client.put(WEBHOOK, json={"url": url}, headers=bearer(token))
            assert answer.status == 403, url
            assert (await answer.json())["error"]["code"] == "destination_refused"
    assert refused() == before + 4
    assert logs.text().count("security: webhook destination refused") == 4
    answer = await client.put(
        WEBHOOK, json={"url": "http://hooks.example.com/"}, headers=bearer(token)
    )
    assert answer.status == 422
    assert await notify_store.endpoints(db, tenant_id) == []


def _cli_env(settings: Settings) -> dict[str, str]:
    return {
        "COLMENA_DATABASE_URL": settings.require_database_url(),
        "COLMENA_BROKER_URL": settings.require_broker_url(),
        "COLMENA_QUEUE_PREFIX": settings.queue_prefix,
        "COLMENA_DATA_DIR": str(settings.data_dir),
    }


def test_the_cli_lists_dead_deliveries_and_replays_one(active) -> None:
    async def seed() -> tuple[str, uuid.UUID]:
        conn = await connect(active.require_database_url())
        try:
            tenant_id, _ = await add_tenant(conn)
            return tenant_id, await dead_delivery(conn, tenant_id)
        finally:
            await conn.close()

    tenant_id, dead = asyncio.run(seed())
    runner, env = CliRunner(), _cli_env(active)
    listed = runner.invoke(cli, ["notifications", "list", "--status", "dead"], env=env)
    assert listed.exit_code == 0, listed.output
    assert str(dead) in listed.output and tenant_id in listed.output and "HTTP 500" in listed.output

    replayed = runner.invoke(cli, ["notifications", "replay", str(dead)], env=env)
    assert replayed.exit_code == 0, replayed.output
    assert f"delivery {dead} replayed: queued" in replayed.output
    assert queue_counts(active.queue_prefix + "notifications")[0] == 1  # on RabbitMQ now
    again = runner.invoke(cli, ["notifications", "replay", str(dead)], env=env)
    assert again.exit_code == 1 and "is not dead" in again.output
    assert (
        runner.invoke(cli, ["notifications", "replay", str(uuid.uuid4())], env=env).exit_code == 1
    )
    pending = runner.invoke(cli, ["notifications", "list", "--tenant", tenant_id], env=env)
    assert "pending" in pending.output


async def test_old_finished_events_are_trimmed_and_unfinished_ones_kept(active, db) -> None:
    tenant_id, _ = await add_tenant(db)
    finished = await dead_delivery(db, tenant_id)
    async with db.transaction():
        [row] = await notify_store.record_events(db, tenant_id, [("bot.stopped", {})])
    pending = uuid.UUID(row.args[0])
    await db.execute("UPDATE tenant_events SET occurred_at = now() - interval '40 days'")
    assert await notify_store.trim(db, keep_days=30) == 1
    assert await notify_store.get_delivery(db, finished, tenant_id=tenant_id) is None
    assert await notify_store.get_delivery(db, pending, tenant_id=tenant_id) is not None
    assert await notify_store.trim(db, keep_days=30) == 0
