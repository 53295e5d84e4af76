"""`colmena dlq`: dead letters of every queue, on RabbitMQ or on the in-process broker of a
`colmena dev` running in this directory.

A dead letter that is not a Dramatiq message is listed raw and marked undecodable; `export`
writes every dead letter's exact bytes, `delete` removes one, `requeue` skips those and says so.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import click

from colmena.cli.audit import record_operator_action
from colmena.config import Settings, load_settings
from colmena.config.dev_stack import operator_settings
from colmena.runtime.deadletters import DeadLetter, Requeued
from colmena.runtime.queue_admin import BrokerUnreachable, QueueAdmin, queue_admin_for
from colmena.runtime.queues import DOMAIN_QUEUES
from colmena.runtime.startup import open_database
from colmena.store import deadletters as deadletter_store

T = TypeVar("T")


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
    ids = [letter.message_id for letter in letters if not letter.undecodable]
    conn = await open_database(settings.database_url.get_secret_value())
    try:
        known = await deadletter_store.reasons(conn, ids)
    finally:
        await conn.close()
    return [
        replace(letter, error=known[letter.message_id])
        if not letter.undecodable and letter.message_id in known
        else letter
        for letter in letters
    ]


def _run(call: Callable[[Settings, QueueAdmin], Awaitable[T]]) -> T:
    """Run one call against the queue admin, closing it after; an unreachable broker is one line."""
    settings, admin = _admin()

    async def run() -> T:
        try:
            return await call(settings, admin)
        finally:
            await admin.close()

    try:
        return asyncio.run(run())
    except BrokerUnreachable as exc:
        raise click.ClickException(str(exc)) from None


async def _audit(settings: Settings, command: str, action: str, letters: list[DeadLetter]) -> None:
    """One audit row per letter moved or removed, written once the broker has done it (the move
    is not a database change, so no transaction can hold both)."""
    if not letters or settings.database_url is None:
        return
    conn = await open_database(settings.database_url.get_secret_value())
    try:
        async with conn.transaction():
            for letter in letters:
                await record_operator_action(
                    conn,
                    command,
                    action=action,
                    subject_kind="dead_letter",
                    subject_id=letter.message_id or f"{letter.queue}#{letter.position}",
                    before={
                        "queue": letter.queue,
                        "actor": letter.actor,
                        "retries": letter.retries,
                    },
                )
    finally:
        await conn.close()


def _dead_letters(queue: str | None) -> list[DeadLetter]:
    async def load(settings: Settings, admin: QueueAdmin) -> list[DeadLetter]:
        return await _with_reasons(settings, await admin.dead_letters(_queues(queue)))

    return _run(load)


def _line(letter: DeadLetter) -> str:
    where = f"{letter.queue:<10} #{letter.position:<4}"
    if letter.undecodable:
        named = f" id={letter.message_id}" if letter.message_id else ""
        properties = f"  amqp={json.dumps(letter.amqp)}" if letter.amqp else ""
        return (
            f"{where} UNDECODABLE{named}  size={len(letter.body)}  "
            f"{letter.preview!r}{properties}  {letter.error}"
        )
    return (
        f"{where} {letter.message_id}  {letter.actor}{list(letter.args)}  "
        f"retries={letter.retries}  {letter.error}"
    )


@click.group("dlq")
def dlq() -> None:
    """Dead letters of every queue: list, show, requeue, delete, export."""


@dlq.command("list")
@click.option("--queue", help="one queue (default: all)")
@click.option("--json", "as_json", is_flag=True)
def dlq_list(queue: str | None, as_json: bool) -> None:
    """Dead letters with their position, actor, arguments, retries and the last error; one that
    is not a Dramatiq message raw (size, first bytes, AMQP properties)."""
    letters = _dead_letters(queue)
    if as_json:
        click.echo(json.dumps([letter.summary() for letter in letters], indent=2))
        return
    if not letters:
        click.echo("no dead letters")
    for letter in letters:
        click.echo(_line(letter))


@dlq.command("show")
@click.option("--queue", help="one queue (default: all)")
@click.option("--id", "message_id", required=True, help="message id, or position with --queue")
def dlq_show(queue: str | None, message_id: str) -> None:
    """One dead letter in full."""
    match = [letter for letter in _dead_letters(queue) if letter.matches(message_id)]
    if not match:
        raise click.ClickException(f"no dead letter {message_id}")
    click.echo(json.dumps(match[0].summary() | {"kwargs": match[0].kwargs}, indent=2))


@dlq.command("requeue")
@click.option("--queue", help="one queue (default: all)")
@click.option("--id", "message_id", help="one message (default: every dead letter)")
def dlq_requeue(queue: str | None, message_id: str | None) -> None:
    """Put dead letters back on their queue with their retries reset; undecodable ones stay."""

    async def move(settings: Settings, admin: QueueAdmin) -> Requeued:
        done = await admin.requeue(_queues(queue), message_id)
        await _audit(settings, "dlq requeue", "deadletter.requeue", list(done.moved))
        return done

    done = _run(move)
    if message_id is not None and not done.moved and not done.skipped:
        raise click.ClickException(f"no dead letter {message_id}")
    click.echo(f"requeued {len(done.moved)} message(s)")
    for letter in done.moved:
        click.echo(f"  {letter.queue} {letter.message_id} {letter.actor}")
    if done.skipped:
        click.echo(
            f"skipped {len(done.skipped)} undecodable message(s), left in place "
            "(`colmena dlq export` keeps them, `colmena dlq delete` removes one):"
        )
        for letter in done.skipped:
            click.echo(f"  {letter.queue} #{letter.position} size={len(letter.body)}")
    if message_id is not None and not done.moved:
        raise click.ClickException(f"dead letter {message_id} is undecodable: not requeued")


@dlq.command("delete")
@click.option("--queue", required=True, help="the queue holding it")
@click.option("--id", "ident", required=True, help="message id, or position as `dlq list` shows")
def dlq_delete(queue: str, ident: str) -> None:
    """Remove one dead letter for good (export it first to keep a copy)."""

    async def remove(settings: Settings, admin: QueueAdmin) -> DeadLetter | None:
        deleted = await admin.delete(_queues(queue)[0], ident)
        await _audit(settings, "dlq delete", "deadletter.delete", [deleted] if deleted else [])
        return deleted

    deleted = _run(remove)
    if deleted is None:
        raise click.ClickException(f"no dead letter {ident} in {queue}")
    kind = "undecodable" if deleted.undecodable else deleted.actor
    click.echo(f"deleted {deleted.queue} #{deleted.position} {deleted.message_id} ({kind})")


@dlq.command("export")
@click.option("--queue", help="one queue (default: all)")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def dlq_export(queue: str | None, out: Path) -> None:
    """Every dead letter as JSON lines, exact bytes in base64; they stay where they are.

    The file is created with mode 0600 (dead letters carry customers' data) and never
    overwritten."""

    async def load(_settings: Settings, admin: QueueAdmin) -> list[DeadLetter]:
        return await admin.dead_letters(_queues(queue))

    letters = _run(load)
    try:
        descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise click.ClickException(f"{out} exists; choose another --out") from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        for letter in letters:
            file.write(json.dumps(letter.export_line()) + "\n")
    undecodable = sum(letter.undecodable for letter in letters)
    click.echo(f"exported {len(letters)} dead letter(s) to {out} ({undecodable} undecodable)")


COMMANDS = [dlq]
