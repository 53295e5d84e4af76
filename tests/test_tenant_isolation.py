"""One tenant cannot degrade another: every per-tenant resource is bounded atomically.

On the real ingress with the real PostgreSQL and RabbitMQ. A bound is shown exact by holding the
requests that took its slots inside PostgreSQL (a table lock the test holds), firing more at
once, and counting the 429s before letting the held ones finish. The per-client rate limits are
off here: what is measured is the per-tenant bounds alone.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from colmena.config import Settings
from colmena.store import bot_logs
from colmena.store import tenants as store
from colmena.store.pool import connect
from tests.bots_support import ADMIN_TOKEN, add_tenant, bearer, bot_settings
from tests.conftest import wait_for


@pytest.fixture
def iso(settings: Settings, tmp_path: Path) -> Settings:
    return bot_settings(settings, tmp_path, "process", None, rate_limit_preset="off")


def bounded(base: Settings, **bounds: Any) -> Settings:
    return base.model_copy(update=bounds)


@asynccontextmanager
async def tables_locked(database_url: str, *tables: str) -> AsyncIterator[None]:
    """Hold `tables` locked against reads and writes until the block ends."""
    conn = await connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        await conn.close()


async def answered(response: aiohttp.ClientResponse) -> tuple[int, str, str | None]:
    """(status, error code or "", Retry-After) of a finished response."""
    body = await response.json(content_type=None) if response.status >= 400 else {}
    code = body.get("error", {}).get("code", "") if isinstance(body, dict) else ""
    retry_after = response.headers.get("Retry-After")
    response.release()
    return response.status, code, retry_after


async def fire_while_held(
    database_url: str,
    tables: tuple[str, ...],
    calls: list[Awaitable[aiohttp.ClientResponse]],
    refused: int,
    meanwhile: Callable[[], Awaitable[None]] | None = None,
) -> tuple[list[tuple[int, str, str | None]], list[tuple[int, str, str | None]]]:
    """(answers given while `tables` are locked, answers after): the held ones finish later.

    `meanwhile` runs while the held requests still hold their slots.
    """
    async with tables_locked(database_url, *tables):
        tasks = [asyncio.ensure_future(call) for call in calls]

        async def refused_all() -> bool:
            return sum(task.done() for task in tasks) >= refused

        await wait_for(refused_all, timeout=20)
        early = [await answered(task.result()) for task in tasks if task.done()]
        held = [task for task in tasks if not task.done()]
        assert len(held) == len(calls) - refused, "the held requests must still wait on the lock"
        if meanwhile is not None:
            await meanwhile()
    late = [await answered(await task) for task in held]
    return early, late


async def test_requests_in_flight_per_token_are_bounded(iso, db, database_url, make_client) -> None:
    _, token = await add_tenant(db)
    _, other = await add_tenant(db)
    client = await make_client(bounded(iso, tenant_max_requests=3))
    calls = [client.get("/api/v1/bot/status", headers=bearer(token)) for _ in range(8)]

    async def other_tenant_served() -> None:  # another tenant's requests are no part of it
        keys = await client.get("/api/v1/keys", headers=bearer(other))
        assert keys.status == 200

    early, late = await fire_while_held(
        database_url, ("bots",), calls, refused=5, meanwhile=other_tenant_served
    )
    assert early == [(429, "too_many_requests", "1")] * 5
    assert [status for status, _, _ in late] == [200] * 3


async def test_key_writes_per_tenant_are_bounded(iso, db, database_url, make_client) -> None:
    _, token = await add_tenant(db)
    client = await make_client(bounded(iso, tenant_max_requests=10, tenant_max_key_writes=2))
    body = {"provider": "binance", "key": "sk-" + uuid.uuid4().hex}
    calls = [client.post("/api/v1/keys", json=body, headers=bearer(token)) for _ in range(4)]
    calls += [client.delete("/api/v1/keys/bitso", headers=bearer(token)) for _ in range(2)]
    early, late = await fire_while_held(
        database_url, ("pending_provider_keys", "provider_keys"), calls, refused=4
    )
    assert early == [(429, "too_many_key_writes", "1")] * 4
    assert {status for status, _, _ in late} <= {201, 404} and len(late) == 2
    listed = await client.get("/api/v1/keys", headers=bearer(token))
    assert listed.status == 200  # reads are no key write


async def test_log_reads_per_tenant_are_bounded(iso, db, database_url, make_client) -> None:
    tenant_id, token = await add_tenant(db)
    await bot_logs.append(db, tenant_id, 1, [(datetime.now(UTC), "hello")])
    client = await make_client(bounded(iso, tenant_max_requests=10, tenant_max_log_reads=2))
    calls = [client.get("/api/v1/bot/logs", headers=bearer(token)) for _ in range(7)]
    early, late = await fire_while_held(database_url, ("bot_logs",), calls, refused=5)
    assert early == [(429, "too_many_log_reads", "1")] * 5
    assert [status for status, _, _ in late] == [200, 200]


async def test_commands_in_flight_per_tenant_are_bounded_atomically(iso, db, make_client) -> None:
    tenant_id, token = await add_tenant(db)
    client = await make_client(
        bounded(iso, tenant_max_requests=10, tenant_max_commands_in_flight=3)
    )
    answers = await asyncio.gather(
        *(client.post("/api/v1/bot/start", headers=bearer(token)) for _ in range(7))
    )
    counted = Counter([await answered(response) for response in answers])
    assert counted == {(202, "", None): 3, (429, "too_many_commands", "5"): 4}
    changed = {"symbols": ["ETHUSDT"], "mode": "paper", "capital": "50"}
    refused = await client.put("/api/v1/bot/config", json=changed, headers=bearer(token))
    assert await answered(refused) == (429, "too_many_commands", "5")  # a configure is one too
    config = await client.get("/api/v1/bot/config", headers=bearer(token))
    assert (await config.json())["config"]["symbols"] == ["BTCUSDT"], "the refusal changed nothing"

    # An operator's stop is never refused for the tenant's backlog.
    admin = await client.post(f"/api/v1/admin/bots/{tenant_id}/stop", headers=bearer(ADMIN_TOKEN))
    assert admin.status == 202

    # A command done frees its place; one lost (still queued long after) no longer counts.
    queued = await db.fetch(
        "SELECT id FROM bot_commands WHERE tenant_id = $1 AND status = 'queued' "
        "ORDER BY created_at",
        tenant_id,
    )
    assert len(queued) == 4  # the operator's stop is not done either: it counts
    for row in queued[:2]:
        await store.finish_command(db, row["id"], "done", None)
    again = await client.post("/api/v1/bot/restart", headers=bearer(token))
    assert again.status == 202
    await db.execute(
        "UPDATE bot_commands SET created_at = now() - interval '1 hour' WHERE tenant_id = $1",
        tenant_id,
    )
    late = await client.post("/api/v1/bot/stop", headers=bearer(token))
    assert late.status == 202


async def test_a_busy_database_pool_is_a_503_not_a_wait(iso, db, database_url, make_client) -> None:
    _, token = await add_tenant(db)
    client = await make_client(
        bounded(iso, db_pool_max=2, tenant_max_requests=10, tenant_db_acquire_seconds=0.3)
    )
    calls = [client.get("/api/v1/bot/status", headers=bearer(token)) for _ in range(3)]
    early, late = await fire_while_held(database_url, ("bots",), calls, refused=1)
    assert early == [(503, "busy", "1")]
    assert [status for status, _, _ in late] == [200, 200]


async def test_a_flooding_tenant_gets_429s_and_the_other_tenant_is_served(
    iso, db, make_client
) -> None:
    """A holds its maximum log streams and floods every tenant route; B's requests all succeed."""
    flood_id, flood_token = await add_tenant(db)
    calm_id, calm_token = await add_tenant(db)
    for tenant_id in (flood_id, calm_id):
        await bot_logs.append(db, tenant_id, 1, [(datetime.now(UTC), "hello")])
        await store.set_desired(db, tenant_id, "running", reset_restarts=True)
    client = await make_client(iso)
    base = str(client.make_url("")).rstrip("/")
    flood_statuses: Counter[int] = Counter()
    stop = asyncio.Event()

    async def flood(session: aiohttp.ClientSession) -> None:
        routes = [
            ("GET", "/api/v1/bot/status", None),
            ("GET", "/api/v1/bot/config", None),
            ("GET", "/api/v1/bot/logs", None),
            ("POST", "/api/v1/bot/restart", None),
            ("GET", f"/api/v1/commands/{uuid.uuid4()}", None),
            ("GET", "/api/v1/keys", None),
            ("POST", "/api/v1/keys", {"provider": "binance", "key": "sk-" + uuid.uuid4().hex}),
            ("DELETE", "/api/v1/keys/bitso", None),
        ]
        turn = 0
        while not stop.is_set():
            method, path, body = routes[turn % len(routes)]
            turn += 1
            async with session.request(
                method, base + path, json=body, headers=bearer(flood_token)
            ) as response:
                await response.read()
                flood_statuses[response.status] += 1

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as flood_session:
        streams = await asyncio.gather(
            *(
                flood_session.get(base + "/api/v1/bot/logs/stream", headers=bearer(flood_token))
                for _ in range(50)
            )
        )
        assert Counter(response.status for response in streams) == {200: 2, 429: 48}
        flooders = [asyncio.ensure_future(flood(flood_session)) for _ in range(60)]
        try:

            async def flood_refused() -> bool:
                return flood_statuses[429] > 0

            await wait_for(flood_refused, timeout=20)
            calm: list[int] = []
            async with aiohttp.ClientSession() as calm_session:
                for path, method in [
                    ("/api/v1/bot/status", "GET"),
                    ("/api/v1/bot/logs", "GET"),
                    ("/api/v1/bot/restart", "POST"),
                    ("/api/v1/bot/config", "GET"),
                    ("/api/v1/keys", "GET"),
                ] * 4:
                    async with calm_session.request(
                        method, base + path, headers=bearer(calm_token)
                    ) as response:
                        await response.read()
                        calm.append(response.status)
                    if len(calm) % 5 == 3:  # the command: let it count as done
                        await db.execute(
                            "UPDATE bot_commands SET status = 'done' WHERE tenant_id = $1",
                            calm_id,
                        )
            assert not any(task.done() for task in flooders), "the flood ran throughout"
        finally:
            stop.set()
            await asyncio.gather(*flooders)
            for response in streams:
                response.close()
    assert set(calm) <= {200, 202} and calm.count(202) == 4
    assert flood_statuses[429] > 0
    assert set(flood_statuses) <= {200, 201, 202, 404, 429}, flood_statuses
