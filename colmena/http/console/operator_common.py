"""What every operator page shares: rendering with the operators' formats, a connection, an
audited transaction, and keyset cursors of one integer or text key.

Every change an operator makes runs in `audited`: the transaction first names the admin and the
cause "console" for the audit trail's triggers, so each row it changes is recorded with who
did it, and an action that changes no audited row adds its own `record_action` in the same
transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import asyncpg
from aiohttp import web

from colmena.domain.durations import age_text
from colmena.http.console.core import (
    VIEWER,
    HtmlError,
    Page,
    decode_cursor,
    encode_cursor,
    page_cursor,
    render,
)
from colmena.http.console.operator_format import money, money_minor, when
from colmena.http.context import RESOURCES, SETTINGS
from colmena.http.publishing import AFTER_COMMIT
from colmena.store import audit
from colmena.store.outbox import OutboxMessage

ADMIN = "/console/admin"
PAGE_SIZE = 50
CAUSE = "console"
MAX_ID = 2**63 - 1

T = TypeVar("T")


def show(request: web.Request, template: str, context: dict[str, Any]) -> web.Response:
    """An operator page: `console/operator/<template>` with the operators' formats."""
    zone = request.config_dict[SETTINGS].operator_zone()
    helpers: dict[str, Callable[..., Any]] = {
        "when": partial(when, zone=zone),
        "age": age_text,
        "money": money,
        "money_minor": money_minor,
        "options": options,
    }
    return render(request, f"console/operator/{template}", {**helpers, **context})


def options(values: Sequence[str]) -> list[tuple[str, str]]:
    """A select's (value, text) pairs for values shown as they are."""
    return [(value, value) for value in values]


@asynccontextmanager
async def connection(request: web.Request) -> AsyncIterator[asyncpg.Connection]:
    async with request.config_dict[RESOURCES].pool.acquire() as conn:
        yield conn


@asynccontextmanager
async def audited(request: web.Request) -> AsyncIterator[asyncpg.Connection]:
    """A transaction whose audited changes are attributed to the signed-in admin."""
    async with connection(request) as conn, conn.transaction():
        await audit.attribute(conn, actor=request[VIEWER].audit_actor, cause=CAUSE)
        yield conn


async def record(
    conn: asyncpg.Connection,
    request: web.Request,
    *,
    action: str,
    subject_kind: str,
    subject_id: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """An audit row for an action that changes no audited row (a requeue, a resend)."""
    await audit.record_action(
        conn,
        actor=request[VIEWER].audit_actor,
        action=action,
        subject_kind=subject_kind,
        subject_id=subject_id,
        before=before,
        after=after,
        cause=CAUSE,
    )


def publish(request: web.Request, rows: Sequence[OutboxMessage | None]) -> None:
    """Hand committed outbox rows to the ingress's publisher (the relay sends what it misses)."""
    request.config_dict[AFTER_COMMIT].submit(rows)


def int_cursor(request: web.Request) -> int | None:
    """The integer key this page starts below, from the page's cursor."""
    cursor = page_cursor(request)
    if cursor is None:
        return None
    (value,) = decode_cursor(cursor, 1)
    if not isinstance(value, int) or isinstance(value, bool):
        raise HtmlError(400, "That page link is not valid")
    return value


def text_cursor(request: web.Request) -> str | None:
    cursor = page_cursor(request)
    if cursor is None:
        return None
    (value,) = decode_cursor(cursor, 1)
    if not isinstance(value, str):
        raise HtmlError(400, "That page link is not valid")
    return value


def page_of(rows: Sequence[T], key: Callable[[T], int | str], limit: int = PAGE_SIZE) -> Page[T]:
    """The first `limit` of `rows` (fetched one over), with a cursor after the last if more."""
    if len(rows) <= limit:
        return Page(items=list(rows))
    return Page(items=list(rows[:limit]), next_cursor=encode_cursor(key(rows[limit - 1])))


def query_text(request: web.Request, name: str, *, longest: int = 200) -> str | None:
    """A trimmed query parameter; empty is none, NUL or an overlong one is a 400 page."""
    value = request.query.get(name, "").strip()
    if not value:
        return None
    if len(value) > longest or "\x00" in value:
        raise HtmlError(400, "That search is too long or not text")
    return value


def path_int(request: web.Request, name: str, missing: str) -> int:
    """A numeric path part; anything else names nothing (a 404 page saying `missing`)."""
    raw = request.match_info[name]
    if not raw.isascii() or not raw.isdigit() or int(raw) > MAX_ID:
        raise HtmlError(404, missing)
    return int(raw)


def choice(request: web.Request, name: str, allowed: Sequence[str]) -> str | None:
    value = query_text(request, name)
    if value is not None and value not in allowed:
        raise HtmlError(400, "Unknown filter value")
    return value
