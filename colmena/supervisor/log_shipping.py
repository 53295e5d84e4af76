"""Bots' log lines copied into PostgreSQL, so the ingress shows logs without touching a runtime.

`ship_all` lists the runtime once and, for every bot of a known tenant (running or exited),
appends the lines written since the tenant's cursor and moves the cursor in the same
transaction, under the cursor's row lock: each line is shipped once, whether the shipper
restarts in between or two of them run at once. The reconciler ships a bot's last lines before
it replaces or stops it (`ship_bot`), so a crashed bot's final words survive its restart.

Old lines go: beyond COLMENA_BOT_LOG_MAX_LINES per tenant as new ones arrive, and once older
than the tenant's plan keeps logs (`log_retention_days`) on every pass.
"""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from colmena.store import bot_logs as store
from colmena.store.tenants import known_tenants
from colmena.supervisor.runtime import BotNotFound, BotStatus, LogPosition, Runtime

log = structlog.get_logger(__name__)

MAX_LINE_CHARS = 8192


def clean(text: str) -> str:
    """A line PostgreSQL can store and a log view can show: no NUL, no CR, bounded length."""
    return text.replace("\0", "\ufffd").replace("\r", "")[:MAX_LINE_CHARS]


async def ship_bot(conn: asyncpg.Connection, runtime: Runtime, bot: BotStatus, *, keep: int) -> int:
    """Append the lines `bot` wrote since its tenant's cursor; returns how many were new."""
    tenant_id = bot.tenant_id
    if tenant_id is None:
        return 0
    async with conn.transaction():
        cursor = await store.lock_cursor(conn, tenant_id)
        position = (
            LogPosition(cursor.bot_id, cursor.position, cursor.skip)
            if cursor.bot_id is not None
            else None
        )
        try:
            batch = await asyncio.to_thread(runtime.logs_since, bot.bot_id, position)
        except BotNotFound:
            return 0  # gone since the listing: its lines went with it
        if not batch.entries and batch.position == position:
            return 0
        lines = [(entry.logged_at, clean(entry.text)) for entry in batch.entries]
        last_seq = cursor.last_seq + len(lines)
        kept = lines[-keep:]  # lines beyond `keep` would be trimmed at once
        await store.append(conn, tenant_id, last_seq - len(kept) + 1, kept)
        if lines:
            await store.keep_newest(conn, tenant_id, last_seq, keep)
        await store.save_cursor(
            conn,
            tenant_id,
            store.ShipCursor(
                last_seq=last_seq,
                bot_id=batch.position.bot_id,
                position=batch.position.offset,
                skip=batch.position.skip,
            ),
        )
    return len(lines)


async def ship_all(pool: asyncpg.Pool, runtime: Runtime, *, keep: int, concurrency: int) -> int:
    """One pass over every bot, then the retention trim; returns how many lines were shipped."""
    bots = await asyncio.to_thread(runtime.list_bots)
    async with pool.acquire() as conn:
        known = await known_tenants(conn, [bot.tenant_id for bot in bots if bot.tenant_id])
    gate = asyncio.Semaphore(concurrency)

    async def one(bot: BotStatus) -> int:
        async with gate, pool.acquire() as conn:
            return await ship_bot(conn, runtime, bot, keep=keep)

    shippable = [bot for bot in bots if bot.tenant_id in known]
    results = await asyncio.gather(*(one(bot) for bot in shippable), return_exceptions=True)
    shipped = 0
    for bot, result in zip(shippable, results, strict=True):
        if isinstance(result, BaseException):
            log.error(
                "shipping a bot's log failed",
                tenant_id=bot.tenant_id,
                error=f"{type(result).__name__}: {result}",
            )
        else:
            shipped += result
    async with pool.acquire() as conn:
        expired = await store.delete_expired(conn)
    if shipped or expired:
        log.info("bot logs shipped", lines=shipped, expired=expired)
    return shipped
