"""A 429 is held back (COLMENA_REFUSAL_DELAY_S), so a flooding client cannot busy the ingress.

On the real ingress with the real PostgreSQL: tenant A's first request holds its only slot
(the table it reads is locked by the test), so each further request of A is refused. The
refusals wait out their delay while tenant B is served, and the refusals one client address
may park are bounded: past COLMENA_REFUSAL_MAX_HELD a 429 leaves at once and closes the
connection. The latency this buys B under a real flood is in bench/isolation.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from colmena.config import Settings
from colmena.http.middlewares import REFUSALS_HELD
from tests.bots_support import add_tenant, bearer, bot_settings
from tests.conftest import wait_for
from tests.test_tenant_isolation import answered, tables_locked

CLIENT = "127.0.0.1"


@pytest.fixture
def held_back(settings: Settings, tmp_path: Path) -> Settings:
    return bot_settings(settings, tmp_path, "process", None).model_copy(
        update={"tenant_max_requests": 1, "refusal_delay_s": 2.0, "refusal_max_held": 2}
    )


async def slot_holder(
    client: Any, db: asyncpg.Connection, token: str
) -> asyncio.Future[aiohttp.ClientResponse]:
    """A's request that takes its only slot, once it waits on the test's table lock."""
    holder = asyncio.ensure_future(client.get("/api/v1/bot/status", headers=bearer(token)))

    async def waiting_on_the_lock() -> bool:
        waiting = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return bool(waiting)

    await wait_for(waiting_on_the_lock, timeout=10)
    return holder


async def test_refusals_wait_out_their_delay_while_others_are_served(
    held_back, db, database_url, make_client
) -> None:
    _, flood = await add_tenant(db)
    _, calm = await add_tenant(db)
    client = await make_client(held_back)
    held = client.app[REFUSALS_HELD]
    async with tables_locked(database_url, "bots"):
        holder = await slot_holder(client, db, flood)
        refused = asyncio.ensure_future(client.get("/api/v1/bot/status", headers=bearer(flood)))

        async def refusal_parked() -> bool:
            return held.open_count(CLIENT) == 1

        await wait_for(refusal_parked, timeout=10)
        keys = await client.get("/api/v1/keys", headers=bearer(calm))
        assert keys.status == 200, "B is served while A's refusal waits"
        assert not refused.done(), "A's refusal is still held back"
    assert await answered(await refused) == (429, "too_many_requests", "1")
    assert held.open_count(CLIENT) == 0
    assert (await holder).status == 200


async def test_refusals_held_per_client_are_bounded(
    held_back, db, database_url, make_client
) -> None:
    _, flood = await add_tenant(db)
    client = await make_client(held_back)
    held = client.app[REFUSALS_HELD]
    async with tables_locked(database_url, "bots"):
        holder = await slot_holder(client, db, flood)
        parked = [
            asyncio.ensure_future(client.get("/api/v1/bot/status", headers=bearer(flood)))
            for _ in range(2)
        ]

        async def both_parked() -> bool:
            return held.open_count(CLIENT) == 2

        await wait_for(both_parked, timeout=10)
        # Past the bound: answered at once, and the connection is closed behind the answer.
        for _ in range(3):
            at_once = await client.get("/api/v1/bot/status", headers=bearer(flood))
            assert at_once.headers.get("Connection", "").lower() == "close"
            assert await answered(at_once) == (429, "too_many_requests", "1")
        assert held.open_count(CLIENT) == 2 and not any(task.done() for task in parked)
    for task in parked:
        response = await task
        assert response.headers.get("Connection", "").lower() != "close"
        assert await answered(response) == (429, "too_many_requests", "1")
    assert held.open_count(CLIENT) == 0
    assert (await holder).status == 200


async def test_a_refusal_is_immediate_when_the_delay_is_off(
    held_back, db, database_url, make_client
) -> None:
    _, flood = await add_tenant(db)
    client = await make_client(held_back.model_copy(update={"refusal_delay_s": 0.0}))
    async with tables_locked(database_url, "bots"):
        holder = await slot_holder(client, db, flood)
        refused = await client.get("/api/v1/bot/status", headers=bearer(flood))
        assert await answered(refused) == (429, "too_many_requests", "1")
        assert not holder.done() and client.app[REFUSALS_HELD].open_count(CLIENT) == 0
    assert (await holder).status == 200
