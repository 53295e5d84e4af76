"""Unsigned payment hints (Mercado Pago IPN) in the inbox: their keys and their recent count.

A hint is stored like any notification, under a key that names its topic, its id and the time
window it arrived in, so the inbox's unique key drops the repeats of one id within a window
(each stored hint costs one API fetch). The count of the last minute is the global budget's
measure: ingress processes share it through the database.
"""

from __future__ import annotations

import asyncpg

HINT_PREFIX = "ipn:"


def hint_key(topic: str, resource_id: str, *, now_s: float, window_s: int) -> str:
    return f"{HINT_PREFIX}{topic}:{resource_id}:{int(now_s // window_s)}"


async def recent_count(conn: asyncpg.Connection, *, seconds: float) -> int:
    """Hints stored in the last `seconds` (read on the partial index inbox_hints_idx)."""
    count = await conn.fetchval(
        "SELECT count(*) FROM inbox WHERE provider = 'mercadopago' AND event_key LIKE 'ipn:%' "
        "AND received_at > now() - make_interval(secs => $1)",
        seconds,
    )
    return int(count)
