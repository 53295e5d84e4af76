"""What a process holds open: settings, the database pool, the publisher and shared clients.

Process-wide clients (the mailer, PAC gateways, the CSD signer, bot runtimes) have one owner:
this object. The module that builds a client declares a `SharedClient` key once
(`colmena.config.shared_client`, low enough for any layer to import); `resources.shared(key)`
creates the client on first use and `close()` closes every client it created, so no module
keeps a global dict of clients and nothing outlives the process's shutdown.

`track_consumption` is for the in-process broker of `colmena dev`, whose queues vanish with the
process: actors then stamp their outbox row as consumed, and a restart republishes the rest.

One object per process (per broker in tests), started lazily on the event loop that uses it,
because an asyncpg pool belongs to the loop that created it. Actors receive it as their first
argument; the ingress keeps it in the aiohttp app.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import TYPE_CHECKING, Any, TypeVar, cast

import asyncpg

from colmena.config import Settings
from colmena.config.shared_client import SharedClient
from colmena.runtime.outbox import PublishedMarks
from colmena.store.migrate import ensure_migrated
from colmena.store.pool import create_pool

if TYPE_CHECKING:
    from colmena.runtime.publisher import Publisher

ClientT = TypeVar("ClientT")


class Resources:
    def __init__(
        self,
        settings: Settings,
        *,
        database_url: str,
        publisher: Publisher,
        track_consumption: bool = False,
    ) -> None:
        self.settings = settings
        self.track_consumption = track_consumption
        self.database_url = database_url
        self.publisher = publisher
        self._pool: asyncpg.Pool | None = None
        self._marks: PublishedMarks | None = None
        self._lock: asyncio.Lock | None = None
        self._clients: dict[SharedClient[Any], Any] = {}
        self._clients_lock = threading.Lock()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("Resources.start() has not run")
        return self._pool

    async def start(self) -> None:
        """Open the pool once and check the schema; later calls return at once."""
        if self._pool is not None:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._pool is not None:
                return
            pool = await create_pool(
                self.database_url,
                min_size=self.settings.db_pool_min,
                max_size=self.settings.db_pool_max,
            )
            try:
                async with pool.acquire() as conn:
                    await ensure_migrated(conn)
            except BaseException:
                await pool.close()
                raise
            self._pool = pool
            # Well under the relay's grace, which must not find rows still waiting for a mark.
            self._marks = PublishedMarks(pool, window_s=min(1.0, self.settings.relay_grace_s / 4))

    @property
    def published_marks(self) -> PublishedMarks:
        """Where actors hand the rows they published after commit, to be marked in batches."""
        if self._marks is None:
            raise RuntimeError("Resources.start() has not run")
        return self._marks

    def shared(self, key: SharedClient[ClientT]) -> ClientT:
        """The process's client for `key`, created on first use (from any thread)."""
        with self._clients_lock:
            if key not in self._clients:
                self._clients[key] = key.create(self.settings)
            return cast(ClientT, self._clients[key])

    async def close(self) -> None:
        """Close shared clients (newest first), the pool and the publisher."""
        with self._clients_lock:
            clients, self._clients = self._clients, {}
        for key, client in reversed(clients.items()):
            if key.close is not None:
                closing = key.close(client)
                if inspect.isawaitable(closing):
                    await closing
        marks, self._marks = self._marks, None
        if marks is not None:
            await marks.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        await self.publisher.close()
