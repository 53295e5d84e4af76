"""`colmena dlq`: dead letters of every queue, on RabbitMQ or on the in-process broker of a
`colmena dev` running in this directory."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import click

from colmena.config import Settings, load_settings
from colmena.config.dev_stack import operator_settings
from colmena.runtime.deadletters import DeadLetter
from colmena.runtime.queue_admin import BrokerUnreachable, QueueAdmin, queue_admin_for
from colmena.runtime.queues import DOMAIN_QUEUES
from colmena.runtime.startup import open_database
from colmena.store import deadletters as deadletter_store


def _queues(queue: str | None) -> list[str]:
    if queue is None:
        return list(DOMAIN_QUEUES)
    if queue not in DOMAIN_QUEUES:
        raise click.BadParameter(f"known queues: {', '.join(DOMAIN_QUEUES)}", param_hint="--queue")
    return [queue]


def _admin() -> tuple[Settings, QueueAdmin]:
    settings, stack = operator_settings(load_settings())
    return settings, queue_admin_for(settings, stack)


async def _with_reasons(settings: Settings, letters: list[DeadLetter]) -> list[DeadLetter]:
    """The reason the worker recorded in PostgreSQL replaces the traceback's last line."""
    if not letters or settings.database_url is None:
        return letters
    conn = await open_database(settings.database_url.get_secret_value())
    try:
        known = await deadletter_store.reasons(conn, [letter.message_id for letter in letters])
    finally:
        await conn.close()
    return [replace(letter, error=known.get(letter.message_id, letter.error)) for letter in letters]


def _dead_letters(queue: str | None) -> list[DeadLetter]:
    settings, admin = _admin()

    async def load() -> list[DeadLetter]:
        try:
            return await _with_reasons(settings, await admin.dead_letters(_queues(queue)))
        finally:
            await admin.close()

    try:
        return asyncio.run(load())
    except BrokerUnreachable as exc:
        raise click.ClickException(str(exc)) from None


@click.group("dlq")
def dlq() -> None:
    """Dead letters of every queue: list, show, requeue."""


@dlq.command("list")
@click.option("--queue", help="one queue (default: all)")
@click.option("--json", "as_json", is_flag=True)
def dlq_list(queue: str | None, as_json: bool) -> None:
    """Dead letters with their actor, arguments, retries and the last error."""
    letters = _dead_letters(queue)
    if as_json:
        click.echo(json.dumps([letter.summary() for letter in letters], indent=2))
        return
    if not letters:
        click.echo("no dead letters")
    for letter in letters:
        click.echo(
            f"{letter.queue:<10} {letter.message_id}  {letter.actor}{list(letter.args)}  "
            f"retries={letter.retries}  {letter.error}"
        )


@dlq.command("show")
@click.option("--queue", help="one queue (default: all)")
@click.option("--id", "message_id", required=True)
def dlq_show(queue: str | None, message_id: str) -> None:
    """One dead letter in full."""
    match = [letter for letter in _dead_letters(queue) if letter.message_id == message_id]
    if not match:
        raise click.ClickException(f"no dead letter {message_id}")
    click.echo(json.dumps(match[0].summary() | {"kwargs": match[0].kwargs}, indent=2))


@dlq.command("requeue")
@click.option("--queue", help="one queue (default: all)")
@click.option("--id", "message_id", help="one message (default: every dead letter)")
def dlq_requeue(queue: str | None, message_id: str | None) -> None:
    """Put dead letters back on their queue with their retries reset."""
    _settings, admin = _admin()

    async def move() -> list[DeadLetter]:
        try:
            return await admin.requeue(_queues(queue), message_id)
        finally:
            await admin.close()

    try:
        moved = asyncio.run(move())
    except BrokerUnreachable as exc:
        raise click.ClickException(str(exc)) from None
    if message_id is not None and not moved:
        raise click.ClickException(f"no dead letter {message_id}")
    click.echo(f"requeued {len(moved)} message(s)")
    for letter in moved:
        click.echo(f"  {letter.queue} {letter.message_id} {letter.actor}")


COMMANDS = [dlq]
