"""Tenant API edges, provider keys, log reads, plan changes, admin routes and the operator CLI.

Real PostgreSQL, RabbitMQ and Docker (keys must reach a real container's environment). The
ingress here holds no runtime and no key that opens provider keys: keys are sealed to the
supervisor's public key and taken in by the `accept_key` actor.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import stat
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import docker
import pytest
import structlog
from click.testing import CliRunner
from cryptography.fernet import Fernet, InvalidToken
from prometheus_client import REGISTRY
from pydantic import SecretStr

from colmena.actors.bots import accept_key, apply_plan, reconcile_one, runtime_of
from colmena.cli import cli
from colmena.config import Settings, SettingsError
from colmena.config.logging import configure_logging
from colmena.dev import with_dev_key_pair
from colmena.domain.key_sealing import (
    SealError,
    decode_key,
    encode_key,
    generate_private_key,
    public_key_of,
    seal,
)
from colmena.domain.tenants import token_digest
from colmena.errors import PermanentError
from colmena.store import bot_logs, provider_keys
from colmena.store import notifications as notify_store
from colmena.store import tenants as store
from colmena.store.pool import connect
from colmena.supervisor.bot_image import ensure_bot_image
from colmena.supervisor.keys import (
    DEV_KEYS_FILE,
    DEV_SEAL_KEY_FILE,
    configured_keys,
    key_version,
)
from colmena.supervisor.runtimes import close_runtimes, runtime_kind
from tests.bots_support import (
    ADMIN_TOKEN,
    FIRST_KEY,
    SEAL_PUBLIC_KEY,
    add_tenant,
    bearer,
    bot_of,
    bot_settings,
    remove_instance,
    resources_for,
)
from tests.conftest import wait_for

PLAINTEXT = "sk-live-" + uuid.uuid4().hex  # a provider key that must never show up anywhere
TENANT_ROUTES = [
    ("POST", "/api/v1/bot/start"),
    ("POST", "/api/v1/bot/stop"),
    ("POST", "/api/v1/bot/restart"),
    ("GET", "/api/v1/bot/status"),
    ("GET", "/api/v1/bot/config"),
    ("PUT", "/api/v1/bot/config"),
    ("GET", "/api/v1/bot/logs"),
    ("GET", "/api/v1/bot/logs/stream"),
    ("GET", f"/api/v1/commands/{uuid.uuid4()}"),
    ("GET", "/api/v1/keys"),
    ("POST", "/api/v1/keys"),
    ("DELETE", "/api/v1/keys/binance"),
]


@pytest.fixture
def active(settings: Settings, tmp_path: Path):
    """Process runtime: these tests are about the API, not the runtime (one test uses Docker)."""
    yield bot_settings(settings, tmp_path, "process", None)
    close_runtimes()


@pytest.fixture
def on_docker(docker_engine, settings: Settings, tmp_path: Path):
    chosen = bot_settings(settings, tmp_path, "docker", ensure_bot_image(docker_engine))
    yield chosen
    close_runtimes()
    remove_instance(docker_engine, chosen.bot_instance)


def security_events(reason: str) -> float:
    return REGISTRY.get_sample_value("colmena_security_events_total", {"reason": reason}) or 0.0


async def database_text(conn: asyncpg.Connection) -> str:
    """Every row of every table as text: what a stolen database dump would show."""
    tables = await conn.fetch(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    )
    dumped = [
        await conn.fetchval(f"SELECT coalesce(string_agg(t::text, chr(10)), '') FROM \"{name}\" t")
        for name in (row["table_name"] for row in tables)
    ]
    return "\n".join(dumped)


async def key_rows(conn: asyncpg.Connection, tenant_id: str) -> tuple[list, list]:
    """(stored rows, pending rows) of a tenant's provider keys, everything in them."""
    stored = await conn.fetch(
        "SELECT * FROM provider_keys WHERE tenant_id = $1 ORDER BY provider", tenant_id
    )
    pending = await conn.fetch(
        "SELECT * FROM pending_provider_keys WHERE tenant_id = $1 ORDER BY provider", tenant_id
    )
    return [dict(r) for r in stored], [dict(r) for r in pending]


# Auth ---------------------------------------------------------------------------------------


async def test_every_tenant_route_needs_a_valid_token(active, db, make_client) -> None:
    _, token = await add_tenant(db)
    client = await make_client(active)
    missing_before = security_events("tenant_token_missing")
    invalid_before = security_events("tenant_token_invalid")
    forged = "cmt_" + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    for headers in (
        {},
        {"Authorization": "Basic abc"},
        bearer("nonsense"),
        bearer(forged),
        bearer(token + "x"),
    ):
        answers = set()
        for method, path in TENANT_ROUTES:
            response = await client.request(method, path, headers=headers)
            assert response.status == 401, (method, path, headers)
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="colmena"'
            answers.add(await response.text())
        # One middleware answers for every route: the very same JSON body everywhere.
        [body] = answers
        assert json.loads(body)["error"]["code"] == "unauthorized"
    # No Bearer at all (none, Basic) is "missing"; a Bearer that opens nothing is "invalid".
    assert security_events("tenant_token_missing") == missing_before + 2 * len(TENANT_ROUTES)
    assert security_events("tenant_token_invalid") == invalid_before + 3 * len(TENANT_ROUTES)
    assert await db.fetchval("SELECT count(*) FROM bot_commands") == 0
    assert (await client.get("/api/v1/bot/status", headers=bearer(token))).status == 200


async def test_another_tenants_command_is_404(active, db, make_client) -> None:
    _, mine = await add_tenant(db)
    _, theirs = await add_tenant(db)
    client = await make_client(active)
    their_command = (await (await client.post("/api/v1/bot/start", headers=bearer(theirs))).json())[
        "command_id"
    ]

    for command_id in (their_command, str(uuid.uuid4()), "not-a-uuid"):
        response = await client.get(f"/api/v1/commands/{command_id}", headers=bearer(mine))
        assert response.status == 404 and (await response.json())["error"]["code"] == "not_found"
    assert (
        await client.get(f"/api/v1/commands/{their_command}", headers=bearer(theirs))
    ).status == 200


# Config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (
            {"symbols": ["BTCUSDT", "ETHUSDT"], "mode": "paper", "capital": "100"},
            "symbols",
        ),  # over free's 1
        ({"symbols": ["BTCUSDT"], "mode": "live", "capital": "100"}, "mode"),  # free is paper-only
        (
            {"symbols": ["BTCUSDT"], "mode": "paper", "capital": 100.5},
            "capital",
        ),  # not a decimal string
        ({"symbols": ["BTCUSDT"], "mode": "paper", "capital": "-5"}, "capital"),
        ({"symbols": ["btc/usdt"], "mode": "paper", "capital": "1"}, "symbols.0"),
        ({"symbols": ["BTCUSDT"], "mode": "margin", "capital": "1"}, "mode"),
        ({"symbols": ["BTCUSDT"], "mode": "paper", "capital": "1", "leverage": 10}, "leverage"),
        ([], "body"),
    ],
)
async def test_invalid_or_over_plan_config_is_422_and_changes_nothing(
    active, db, make_client, config, field
) -> None:
    tenant_id, token = await add_tenant(db)
    client = await make_client(active)
    response = await client.put("/api/v1/bot/config", json=config, headers=bearer(token))
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["code"] == "invalid_fields"
    assert field in [f["field"] for f in error["fields"]], error
    bot = await store.get_bot(db, tenant_id)
    assert bot.config_version == 1
    assert await db.fetchval("SELECT count(*) FROM bot_commands") == 0


async def test_config_that_is_not_json_is_400(active, db, make_client) -> None:
    _, token = await add_tenant(db)
    client = await make_client(active)
    response = await client.put("/api/v1/bot/config", data=b"{nope", headers=bearer(token))
    assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_json"
    shown = await (await client.get("/api/v1/bot/config", headers=bearer(token))).json()
    assert (
        shown["limits"] == {"max_symbols": 1, "live_allowed": False, "max_capital": "1000"}
        and shown["config_version"] == 1
    )


# Logs (read from the database; the supervisor side ships them) --------------------------------


async def test_the_ingress_imports_no_runtime_and_no_key_that_opens_provider_keys() -> None:
    probe = (
        "import sys, colmena.http.app, colmena.http.server; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'docker' "
        "or m.startswith(('colmena.actors', 'colmena.supervisor', 'cryptography.fernet'))))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert found.stdout.strip() == "[]"


async def _with_lines(db, *lines: str, running: bool = False) -> tuple[str, str]:
    tenant_id, token = await add_tenant(db)
    await bot_logs.append(db, tenant_id, 1, [(datetime.now(UTC), line) for line in lines])
    if running:
        await store.set_desired(db, tenant_id, "running", reset_restarts=True)
    return tenant_id, token


async def test_logs_are_404_until_the_bot_logged_something(active, db, make_client) -> None:
    _, token = await add_tenant(db)
    client = await make_client(active)
    for path in ("/api/v1/bot/logs", "/api/v1/bot/logs/stream"):
        response = await client.get(path, headers=bearer(token))
        assert response.status == 404 and (await response.json())["error"]["code"] == "no_bot"


async def test_the_stream_of_a_stopped_bot_sends_its_lines_then_ends(
    active, db, make_client
) -> None:
    _, token = await _with_lines(db, "one", "two", "three")
    client = await make_client(active)
    stream = await client.get("/api/v1/bot/logs/stream?tail=2", headers=bearer(token))
    assert stream.status == 200
    assert await asyncio.wait_for(stream.text(), 10) == (
        "data: two\n\ndata: three\n\nevent: end\ndata: the bot's log ended\n\n"
    )


async def test_log_streams_per_tenant_are_capped_atomically(active, db, make_client) -> None:
    tenant_id, token = await _with_lines(db, "hello", running=True)
    # COLMENA_BOT_SSE_MAX_STREAMS_PER_TENANT: 2; requests in flight are no bound here.
    client = await make_client(active.model_copy(update={"tenant_max_requests": 12}))
    opened = await asyncio.gather(
        *(client.get("/api/v1/bot/logs/stream", headers=bearer(token)) for _ in range(12))
    )
    try:
        assert sorted(response.status for response in opened) == [200] * 2 + [429] * 10
        for response in opened:
            if response.status == 429:
                assert (await response.json())["error"]["code"] == "too_many_streams"
        _, other_token = await _with_lines(db, "hi", running=True)
        other = await client.get("/api/v1/bot/logs/stream", headers=bearer(other_token))
        assert other.status == 200  # one tenant's streams do not use another's
        other.close()
    finally:
        for response in opened:
            response.close()


# Provider keys -------------------------------------------------------------------------------


@pytest.mark.docker
async def test_a_sealed_key_is_stored_nowhere_in_clear_and_reaches_only_the_container(
    on_docker, db, make_client, start_worker, capsys
) -> None:
    tenant_id, token = await add_tenant(db)
    handlers = logging.getLogger().handlers[:]
    configure_logging(dev=False, level="DEBUG")
    try:
        client = await make_client(on_docker)
        stored = await client.post(
            "/api/v1/keys", json={"provider": "binance", "key": PLAINTEXT}, headers=bearer(token)
        )
        assert stored.status == 201
        assert await stored.json() == {"provider": "binance", "last4": "****" + PLAINTEXT[-4:]}
        # Sealed on arrival: in the database only as a pending row nobody but the supervisor
        # can open, with the outbox message that asks a bots worker to take it in.
        dump = await database_text(db)
        assert PLAINTEXT not in dump and PLAINTEXT[8:] not in dump
        _, [pending] = await key_rows(db, tenant_id)
        assert pending["last4"] == "****" + PLAINTEXT[-4:]
        listing = await client.get("/api/v1/keys", headers=bearer(token))
        assert [(k["provider"], k["last4"]) for k in (await listing.json())["keys"]] == [
            ("binance", "****" + PLAINTEXT[-4:])
        ]

        start_worker(settings_override=on_docker, queues=["bots"])

        async def taken_in():
            stored, pending = await key_rows(db, tenant_id)
            return stored if stored and not pending else None

        [raw] = await wait_for(taken_in, timeout=30)
        assert Fernet(FIRST_KEY).decrypt(raw["ciphertext"].encode()).decode() == PLAINTEXT
        assert raw["key_version"] == key_version(FIRST_KEY)
        assert raw["last4"] == "****" + PLAINTEXT[-4:]
        dump = await database_text(db)
        assert PLAINTEXT not in dump and PLAINTEXT[8:] not in dump

        listing = await client.get("/api/v1/keys", headers=bearer(token))
        text = await listing.text()
        assert PLAINTEXT not in text
        assert [(k["provider"], k["last4"]) for k in json.loads(text)["keys"]] == [
            ("binance", "****" + PLAINTEXT[-4:])
        ]

        await store.set_desired(db, tenant_id, "running", reset_restarts=True)
        resources = resources_for(on_docker)
        await resources.start()
        try:
            await reconcile_one(resources, tenant_id)
        finally:
            await resources.close()
        runtime = await runtime_of(on_docker)
        bot = await asyncio.to_thread(bot_of, runtime, tenant_id)
        env = docker.from_env().api.inspect_container(bot.bot_id)["Config"]["Env"]
        assert not any(PLAINTEXT in item for item in env)  # keys reach it as a file only
        lines = await wait_for(lambda: asyncio.to_thread(runtime.logs, tenant_id, 100))
        assert not any(PLAINTEXT in line for line in lines)

        assert (await client.delete("/api/v1/keys/binance", headers=bearer(token))).status == 204
        assert (await client.delete("/api/v1/keys/binance", headers=bearer(token))).status == 404
        logged = capsys.readouterr()
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers[:] = handlers
    assert "provider key stored" in logged.err and "provider key taken in" in logged.err
    assert PLAINTEXT not in logged.err and PLAINTEXT not in logged.out


async def test_the_newest_key_sent_wins_and_a_repeated_message_changes_nothing(
    active, db, make_client
) -> None:
    tenant_id, token = await add_tenant(db)
    client = await make_client(active)
    for key in ("first-key-0001", PLAINTEXT):
        sent = await client.post(
            "/api/v1/keys", json={"provider": "binance", "key": key}, headers=bearer(token)
        )
        assert sent.status == 201
    resources = resources_for(active)
    await resources.start()
    try:
        await accept_key(resources, tenant_id, "binance")  # the two messages, in either order:
        await accept_key(resources, tenant_id, "binance")  # the second finds nothing pending
    finally:
        await resources.close()
    [row], pending = await key_rows(db, tenant_id)
    assert pending == [] and Fernet(FIRST_KEY).decrypt(row["ciphertext"].encode()) == (
        PLAINTEXT.encode()
    )
    assert (
        await db.fetchval(
            "SELECT count(*) FROM outbox WHERE actor = 'accept_key' AND args = $1",
            [tenant_id, "binance"],
        )
        == 2
    )


async def test_a_key_deleted_while_a_worker_takes_it_in_is_gone(
    active, db, make_client, database_url
) -> None:
    tenant_id, token = await add_tenant(db)
    client = await make_client(active)
    sent = await client.post(
        "/api/v1/keys", json={"provider": "binance", "key": PLAINTEXT}, headers=bearer(token)
    )
    assert sent.status == 201
    worker = await connect(database_url)  # a bots worker halfway through accept_key
    try:
        taking_in = worker.transaction()
        await taking_in.start()
        assert await provider_keys.lock_pending(worker, tenant_id, "binance") is not None
        await provider_keys.put_key(
            worker, tenant_id, "binance", ciphertext="x", last4="****", key_version="v"
        )
        await provider_keys.delete_pending(worker, tenant_id, "binance")
        deleting = asyncio.ensure_future(
            client.delete("/api/v1/keys/binance", headers=bearer(token))
        )

        async def waiting_for_the_worker() -> bool:
            return bool(
                await db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%DELETE FROM pending_provider_keys%'"
                )
            )

        await wait_for(waiting_for_the_worker, timeout=10)
        await taking_in.commit()
        assert (await deleting).status == 204
    finally:
        await worker.close()
    assert await key_rows(db, tenant_id) == ([], [])


async def test_a_key_sealed_for_another_tenant_or_altered_is_refused_and_changes_nothing(
    active, db
) -> None:
    mine, _ = await add_tenant(db)
    other, _ = await add_tenant(db)
    old = Fernet(FIRST_KEY).encrypt(b"old-key-1234").decode()
    await provider_keys.put_key(
        db, mine, "binance", ciphertext=old, last4="****1234", key_version=key_version(FIRST_KEY)
    )
    for_mine = seal(SEAL_PUBLIC_KEY, PLAINTEXT, tenant_id=mine, provider="binance")
    version, body = for_mine.split(".")
    raw = bytearray(base64.urlsafe_b64decode(body))
    raw[50] ^= 0x01
    refused_ones = {
        "sealed for another tenant": seal(
            SEAL_PUBLIC_KEY, PLAINTEXT, tenant_id=other, provider="binance"
        ),
        "sealed for another provider": seal(
            SEAL_PUBLIC_KEY, PLAINTEXT, tenant_id=mine, provider="kraken"
        ),
        "sealed to another supervisor": seal(
            public_key_of(generate_private_key()), PLAINTEXT, tenant_id=mine, provider="binance"
        ),
        "altered": f"{version}.{base64.urlsafe_b64encode(bytes(raw)).decode()}",
    }
    resources = resources_for(active)
    await resources.start()
    refused_before = security_events("sealed_key_refused")
    try:
        for what, sealed in refused_ones.items():
            async with db.transaction():
                await provider_keys.put_pending(db, mine, "binance", sealed=sealed, last4="****")
            before = await key_rows(db, mine), await key_rows(db, other)
            with pytest.raises(SealError):
                await accept_key(resources, mine, "binance")
            assert (await key_rows(db, mine), await key_rows(db, other)) == before, what
        [stored], _ = await key_rows(db, mine)
        assert stored["ciphertext"] == old  # the bot would still get the old key
        assert security_events("sealed_key_refused") == refused_before + len(refused_ones)

        async with db.transaction():
            await provider_keys.put_pending(db, mine, "binance", sealed=for_mine, last4="****")
        await accept_key(resources, mine, "binance")  # the genuine one opens
    finally:
        await resources.close()
    [stored], [] = await key_rows(db, mine)
    assert Fernet(FIRST_KEY).decrypt(stored["ciphertext"].encode()).decode() == PLAINTEXT


async def test_keys_cannot_be_sent_without_the_supervisors_public_key(
    active, db, make_client
) -> None:
    _, token = await add_tenant(db)
    client = await make_client(active.model_copy(update={"key_seal_public_key": None}))
    refused = await client.post(
        "/api/v1/keys", json={"provider": "binance", "key": PLAINTEXT}, headers=bearer(token)
    )
    assert refused.status == 503 and (await refused.json())["error"]["code"] == "not_configured"
    assert await db.fetchval("SELECT count(*) FROM pending_provider_keys") == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "Binance!", "key": "x" * 20}, "provider"),
        ({"provider": "binance", "key": "short"}, "key"),
        ({"provider": "binance", "key": " padded-key-123 "}, "key"),
        ({"provider": "binance"}, "key"),
        ({"provider": "binance", "key": "x" * 20, "extra": 1}, "extra"),
    ],
)
async def test_bad_keys_are_422(active, db, make_client, body, field) -> None:
    _, token = await add_tenant(db)
    client = await make_client(active)
    response = await client.post("/api/v1/keys", json=body, headers=bearer(token))
    assert response.status == 422
    assert field in [f["field"] for f in (await response.json())["error"]["fields"]]
    assert await db.fetchval("SELECT count(*) FROM provider_keys") == 0
    assert await db.fetchval("SELECT count(*) FROM pending_provider_keys") == 0


def test_keys_rotate_re_encrypts_with_the_newest_key_while_old_keys_still_decrypt(
    settings, tmp_path
) -> None:
    active = bot_settings(settings, tmp_path, "process", None)
    second = Fernet.generate_key().decode()

    async def seed() -> tuple[str, str]:
        conn = await connect(active.require_database_url())
        tenant_id, _ = await add_tenant(conn)
        old = Fernet(FIRST_KEY).encrypt(PLAINTEXT.encode()).decode()
        await provider_keys.put_key(
            conn,
            tenant_id,
            "binance",
            ciphertext=old,
            last4="****",
            key_version=key_version(FIRST_KEY),
        )
        await conn.close()
        return tenant_id, old

    tenant_id, old = asyncio.run(seed())
    rotating = active.model_copy(update={"secret_keys": SecretStr(f"{second},{FIRST_KEY}")})
    # During rotation (new key deployed first, old kept) stored keys still open for new bots.
    from colmena.supervisor.keys import secret_box

    assert secret_box(rotating).decrypt(old) == PLAINTEXT

    result = CliRunner().invoke(
        cli, ["keys", "rotate"], env=_cli_env(active, f"{second},{FIRST_KEY}")
    )
    assert result.exit_code == 0, result.output
    assert "1 provider key(s) re-encrypted" in result.output and PLAINTEXT not in result.output

    async def stored() -> asyncpg.Record:
        conn = await connect(active.require_database_url())
        try:
            return await conn.fetchrow(
                "SELECT ciphertext, key_version FROM provider_keys WHERE tenant_id = $1", tenant_id
            )
        finally:
            await conn.close()

    row = asyncio.run(stored())
    assert row["ciphertext"] != old and row["key_version"] == key_version(second)
    assert Fernet(second).decrypt(row["ciphertext"].encode()).decode() == PLAINTEXT
    with pytest.raises(InvalidToken):
        Fernet(FIRST_KEY).decrypt(row["ciphertext"].encode())  # the old key can now be retired

    wrong = CliRunner().invoke(
        cli, ["keys", "rotate"], env=_cli_env(active, Fernet.generate_key().decode())
    )
    assert wrong.exit_code == 1 and "nothing was changed" in wrong.output
    assert asyncio.run(stored())["ciphertext"] == row["ciphertext"]


# Plans ---------------------------------------------------------------------------------------


@pytest.mark.docker
async def test_apply_plan_upgrades_downgrades_and_ignores_stale_changes(
    on_docker, db, make_client, start_worker
) -> None:
    tenant_id, token = await add_tenant(db)
    client = await make_client(on_docker)
    system = start_worker(settings_override=on_docker, queues=["bots"])
    send = system.broker.get_actor("apply_plan").send
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    send(tenant_id, "pro", True, "subscription:sub_1", t0.isoformat())

    async def on(plan: str):
        tenant = await store.get_tenant(db, tenant_id)
        return tenant.plan == plan

    await wait_for(lambda: on("pro"))
    live = {"symbols": ["BTCUSDT", "ETHUSDT", "SOLUSDT"], "mode": "live", "capital": "500"}
    accepted = await client.put("/api/v1/bot/config", json=live, headers=bearer(token))
    assert accepted.status == 202, await accepted.text()
    start = (await (await client.post("/api/v1/bot/start", headers=bearer(token))).json())[
        "command_id"
    ]

    async def done():
        command = await store.get_command(db, uuid.UUID(start))
        return command.status == "done"

    await wait_for(done, timeout=30)

    # A late, older message (an earlier cancellation) must not undo the upgrade.
    send(tenant_id, "pro", False, "subscription:sub_1", (t0 - timedelta(days=1)).isoformat())
    # Another subscription ending does not touch the plan this one pays for.
    send(
        tenant_id,
        "enterprise",
        False,
        "subscription:sub_other",
        (t0 + timedelta(hours=1)).isoformat(),
    )

    async def recorded(count: int):
        return (
            await db.fetchval("SELECT count(*) FROM plan_changes WHERE tenant_ref = $1", tenant_id)
            >= count
        )

    await wait_for(lambda: recorded(3))
    rows = await db.fetch("SELECT plan, outcome FROM plan_changes WHERE tenant_ref = $1", tenant_id)
    # Two worker threads may record the two late messages in either order.
    assert sorted((r["plan"], r["outcome"]) for r in rows) == [
        ("enterprise", "ignored"),
        ("pro", "applied"),
        ("pro", "stale"),
    ]
    assert (await store.get_tenant(db, tenant_id)).plan == "pro"

    send(
        tenant_id, "pro", False, "subscription:sub_1", (t0 + timedelta(days=30)).isoformat()
    )  # downgrade
    await wait_for(lambda: on("free"))
    bot = await store.get_bot(db, tenant_id)
    assert (
        bot.config["mode"] == "paper"
        and bot.config["symbols"] == ["BTCUSDT"]
        and bot.config_version == 3
    )

    runtime = await runtime_of(on_docker)

    async def paper_bot():
        current = await asyncio.to_thread(bot_of, runtime, tenant_id)
        return current if current is not None and current.config_version == 3 else None

    current = await wait_for(paper_bot, timeout=30)  # the reconcile the plan change asked for
    env = dict(
        e.split("=", 1)
        for e in docker.from_env().api.inspect_container(current.bot_id)["Config"]["Env"]
    )
    assert json.loads(env["BOT_CONFIG"])["mode"] == "paper"
    assert (
        docker.from_env().api.inspect_container(current.bot_id)["HostConfig"]["Memory"]
        == 64 * 1024 * 1024
    )


async def test_apply_plan_rejects_garbage_and_remembers_unknown_tenants(active, db) -> None:
    resources = resources_for(active)
    await resources.start()
    try:
        with pytest.raises(PermanentError):
            await apply_plan(resources, "t-nobody", "pro", True, "payment:1", "yesterday")
        with pytest.raises(PermanentError):
            await apply_plan(
                resources, "t-nobody", "platinum", True, "payment:1", datetime.now(UTC).isoformat()
            )
        await apply_plan(
            resources, "t-later", "pro", True, "payment:7", datetime.now(UTC).isoformat()
        )
    finally:
        await resources.close()
    row = await db.fetchrow("SELECT outcome, reason FROM plan_changes WHERE tenant_ref = 't-later'")
    assert row["outcome"] == "unknown_tenant" and "colmena tenants create --id" in row["reason"]


# Admin ---------------------------------------------------------------------------------------


async def test_admin_routes_need_the_admin_token(active, db, make_client, start_worker) -> None:
    tenant_id, token = await add_tenant(db)
    client = await make_client(active)
    start_worker(settings_override=active, queues=["bots"])
    for headers in ({}, bearer(token), bearer(ADMIN_TOKEN + "x")):
        assert (await client.get("/api/v1/admin/bots", headers=headers)).status == 401
        assert (
            await client.post(f"/api/v1/admin/bots/{tenant_id}/stop", headers=headers)
        ).status == 401
    await store.set_desired(db, tenant_id, "running", reset_restarts=True)

    listed = await (await client.get("/api/v1/admin/bots", headers=bearer(ADMIN_TOKEN))).json()
    assert [(b["tenant"], b["desired"]) for b in listed["bots"]] == [(tenant_id, "running")]
    stopped = await client.post(f"/api/v1/admin/bots/{tenant_id}/stop", headers=bearer(ADMIN_TOKEN))
    assert stopped.status == 202
    command_id = (await stopped.json())["command_id"]
    body = await wait_for(lambda: _finished(client, token, command_id), timeout=30)
    assert body["requested_by"] == "admin" and body["status"] == "done"
    assert (await store.get_bot(db, tenant_id)).desired == "stopped"
    assert (
        await client.post("/api/v1/admin/bots/t-missing/stop", headers=bearer(ADMIN_TOKEN))
    ).status == 404

    unset = await make_client(active.model_copy(update={"bot_admin_token": None}))
    assert (await unset.get("/api/v1/admin/bots", headers=bearer(ADMIN_TOKEN))).status == 503


async def _finished(client, token: str, command_id: str):
    body = await (await client.get(f"/api/v1/commands/{command_id}", headers=bearer(token))).json()
    return body if body["status"] != "queued" else None


# CLI -----------------------------------------------------------------------------------------


def _cli_env(settings: Settings, keys: str = FIRST_KEY) -> dict[str, str]:
    return {
        "COLMENA_DATABASE_URL": settings.require_database_url(),
        "COLMENA_BROKER_URL": settings.require_broker_url(),
        "COLMENA_QUEUE_PREFIX": settings.queue_prefix,
        "COLMENA_SECRET_KEYS": keys,
        "COLMENA_DATA_DIR": str(settings.data_dir),
    }


def _query(settings: Settings, sql: str, *args: object) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await connect(settings.require_database_url())
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def test_tenants_cli_creates_lists_rotates_and_applies_waiting_plans(settings) -> None:
    env = _cli_env(settings)
    runner = CliRunner()
    _query(
        settings,
        "INSERT INTO plan_changes (tenant_ref, plan, active, source, provider_at, outcome, reason) "
        "VALUES ('acme-1', 'pro', true, 'payment:9', now(), 'unknown_tenant', "
        "'no such tenant yet')",
    )

    created = runner.invoke(
        cli,
        ["tenants", "create", "--email", "ops@acme.test", "--plan", "free", "--id", "acme-1"],
        env=env,
    )
    assert created.exit_code == 0, created.output
    token = created.output.rsplit(": ", 1)[1].strip()
    assert token.startswith("cmt_") and created.output.count(token) == 1
    assert "payment:9 (pro, active=True): applied" in created.output
    [row] = _query(settings, "SELECT plan, token_sha256 FROM tenants WHERE id = 'acme-1'")
    assert row["plan"] == "pro" and bytes(row["token_sha256"]) == token_digest(token)
    assert token.encode() not in b"".join(str(v).encode() for v in row.values())

    assert (
        runner.invoke(
            cli, ["tenants", "create", "--email", "x@acme.test", "--id", "acme-1"], env=env
        ).exit_code
        == 1
    )
    assert (
        runner.invoke(
            cli, ["tenants", "create", "--email", "x@acme.test", "--plan", "gold"], env=env
        ).exit_code
        == 1
    )
    listed = runner.invoke(cli, ["tenants", "list"], env=env)
    assert (
        "acme-1" in listed.output
        and "ops@acme.test" in listed.output
        and token not in listed.output
    )

    rotated = runner.invoke(cli, ["tenants", "token", "rotate", "acme-1"], env=env)
    assert rotated.exit_code == 0
    new_token = rotated.output.rsplit(": ", 1)[1].strip()
    [row] = _query(settings, "SELECT token_sha256 FROM tenants WHERE id = 'acme-1'")
    assert bytes(row["token_sha256"]) == token_digest(new_token) != token_digest(token)
    assert runner.invoke(cli, ["tenants", "token", "rotate", "nobody"], env=env).exit_code == 1


def test_bots_cli_lists_and_resets_a_crashloop(settings) -> None:
    env = _cli_env(settings)
    runner = CliRunner()
    created = runner.invoke(
        cli, ["tenants", "create", "--email", "a@b.test", "--id", "loop-1"], env=env
    )
    assert created.exit_code == 0
    _query(
        settings,
        "UPDATE bots SET desired = 'running', observed = 'crashloop', crashloop = true, "
        "crashloop_reason = '3 restarts within 0:02:00, limit 3', restarts_total = 3 "
        "WHERE tenant_id = 'loop-1'",
    )

    listed = runner.invoke(cli, ["bots", "list"], env=env)
    assert listed.exit_code == 0
    line = next(line for line in listed.output.splitlines() if line.startswith("loop-1"))
    assert line.split()[:5] == ["loop-1", "free", "running", "crashloop", "3"]
    assert "colmena bots reset loop-1" in listed.output

    reset = runner.invoke(cli, ["bots", "reset", "loop-1"], env=env)
    assert reset.exit_code == 0 and "reconcile queued" in reset.output
    [row] = _query(settings, "SELECT crashloop, restarts FROM bots WHERE tenant_id = 'loop-1'")
    assert row["crashloop"] is False and row["restarts"] == []
    assert runner.invoke(cli, ["bots", "reset", "nobody"], env=env).exit_code == 1


# colmena dev fallbacks -------------------------------------------------------------------------


def test_dev_falls_back_to_processes_and_production_insists_on_docker(settings, tmp_path) -> None:
    nowhere = {"bot_runtime": "auto", "docker_url": f"unix://{tmp_path}/no-docker.sock"}
    assert runtime_kind(settings.model_copy(update={**nowhere, "env": "dev"})) == "process"
    with pytest.raises(SettingsError, match="Docker"):
        runtime_kind(settings.model_copy(update={**nowhere, "env": "production"}))


def test_dev_generates_one_fernet_key_and_production_requires_the_setting(
    settings, tmp_path
) -> None:
    dev = settings.model_copy(
        update={"env": "dev", "secret_keys": None, "data_dir": tmp_path / "data"}
    )
    first = configured_keys(dev)
    assert configured_keys(dev) == first and len(first) == 1
    Fernet(first[0])  # a usable key
    path = tmp_path / "data" / DEV_KEYS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(SettingsError, match="COLMENA_SECRET_KEYS"):
        configured_keys(dev.model_copy(update={"env": "production"}))


def test_dev_makes_the_key_sealing_pair_once_unless_one_is_configured(settings, tmp_path) -> None:
    dev = settings.model_copy(
        update={
            "data_dir": tmp_path / "data",
            "key_seal_public_key": None,
            "key_seal_private_key": None,
        }
    )
    first, again = with_dev_key_pair(dev), with_dev_key_pair(dev)
    assert first.key_seal_public_key == again.key_seal_public_key is not None
    assert first.key_seal_private_key is not None
    private_key = decode_key(first.key_seal_private_key.get_secret_value())
    assert public_key_of(private_key) == decode_key(first.key_seal_public_key)
    path = tmp_path / "data" / DEV_SEAL_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    configured = dev.model_copy(update={"key_seal_public_key": encode_key(SEAL_PUBLIC_KEY)})
    assert with_dev_key_pair(configured) is configured


def test_keys_keygen_prints_a_pair_the_settings_accept() -> None:
    printed = CliRunner().invoke(cli, ["keys", "keygen"])
    assert printed.exit_code == 0, printed.output
    pair = dict(line.split("=", 1) for line in printed.output.splitlines())
    public_key = pair["COLMENA_KEY_SEAL_PUBLIC_KEY"]
    private_key = decode_key(pair["COLMENA_KEY_SEAL_PRIVATE_KEY"])
    assert decode_key(public_key) == public_key_of(private_key)
    configured = Settings(_env_file=None, key_seal_public_key=public_key)
    assert configured.key_seal_public_key == public_key
    with pytest.raises(ValueError):
        Settings(_env_file=None, key_seal_public_key=public_key[:-1] + "!")


async def test_a_locked_tenant_still_takes_events_so_a_reconcile_cannot_deadlock_a_config_change(
    db, database_url
) -> None:
    """A config change locks the tenant, then its bot row. A reconcile updates the bot row, then
    records a tenant event, whose foreign key needs a share of the tenant row: if the tenant's
    lock refused that share, each would wait for the other (PostgreSQL's deadlock detector then
    failed the config change with a 500)."""
    tenant_id, _ = await add_tenant(db)
    other = await connect(database_url)
    try:
        async with db.transaction():
            assert await store.get_tenant(db, tenant_id, for_update=True) is not None
            async with other.transaction():
                await other.execute("SET LOCAL lock_timeout = '2s'")
                await other.execute(
                    "UPDATE bots SET observed_at = now() WHERE tenant_id = $1", tenant_id
                )
                rows = await notify_store.record_events(
                    other, tenant_id, [("bot.crashed", {"reason": "test"})]
                )
        assert (
            await db.fetchval("SELECT count(*) FROM tenant_events WHERE tenant_id = $1", tenant_id)
            == 1
        ), rows
    finally:
        await other.close()
