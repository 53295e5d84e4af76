"""`colmena audit`: check the hash-chained audit trail, seal it, list what it recorded.

`verify` seals what is unsealed, then checks every sealed row: it exits 0 with the count when the
chain holds, and 1 listing each broken row (altered, missing, out of order) otherwise.
`--head SEQ:HASH` also checks the chain still holds a head noted earlier (printed by every
verify, and kept with the exports), which catches a chain rebuilt wholesale from the end.
A long seal or check shows its progress on stderr when that is a terminal (`--progress` to force
it, `--no-progress` to silence it).

Operator commands elsewhere record who ran them with `operator_actor` and `attribute_operator`.
"""

from __future__ import annotations

import getpass
import json
import sys
import time
from typing import Any

import asyncpg
import click

from colmena.cli.database import with_database
from colmena.config.dev_stack import load_operator_settings
from colmena.store import audit

EXIT_BROKEN = 1
_PROGRESS_EVERY_S = 1.0


def operator_actor() -> str:
    """Who an operator command acts as: the OS user that ran it."""
    return f"operator:cli:{getpass.getuser()}"


async def attribute_operator(conn: asyncpg.Connection, command: str) -> None:
    """Inside the command's transaction: its audited changes are the operator's, caused by
    `cli:<command>`."""
    await audit.attribute(conn, actor=operator_actor(), cause=f"cli:{command}")


async def record_operator_action(
    conn: asyncpg.Connection,
    command: str,
    *,
    action: str,
    subject_kind: str,
    subject_id: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """An audit row for an operator action that changes no audited row."""
    await audit.record_action(
        conn,
        actor=operator_actor(),
        action=action,
        subject_kind=subject_kind,
        subject_id=subject_id,
        before=before,
        after=after,
        cause=f"cli:{command}",
    )


@click.group("audit")
def audit_group() -> None:
    """The audit trail: verify its hash chain, seal new rows, list what was recorded."""


def _head(verdict: audit.AuditVerdict) -> str:
    return f"{verdict.head_seq}:{verdict.head_hash.hex()}"


def _describe(found: audit.AuditBreak) -> str:
    where = [f"seq {found.seq}" if found.seq is not None else None]
    where.append(f"row {found.event_id}" if found.event_id is not None else None)
    place = ", ".join(part for part in where if part)
    return f"{found.kind.value:<16} {place}: {found.detail}"


async def _head_holds(conn: asyncpg.Connection, expected: str) -> bool:
    seq_text, _, hash_text = expected.partition(":")
    stored = await conn.fetchval("SELECT hash FROM audit_seals WHERE seq = $1", int(seq_text))
    return stored is not None and bytes(stored).hex() == hash_text.lower()


class _Progress:
    """Progress lines on stderr for a long seal or check: at most one a second, and the check's
    last one, so a terminal shows it moving and a log is not flooded."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._next = time.monotonic() + _PROGRESS_EVERY_S

    def _due(self, final: bool) -> bool:
        now = time.monotonic()
        if not self._enabled or (now < self._next and not final):
            return False
        self._next = now + _PROGRESS_EVERY_S
        return True

    def sealed(self, total: int) -> None:
        if self._due(final=False):
            click.echo(f"sealing: {total:,} row(s) sealed", err=True)

    def checked(self, done: int, total: int) -> None:
        if self._due(final=done >= total):
            percent = 100 * done // total if total else 100
            click.echo(f"checking: {done:,} of {total:,} link(s) ({percent}%)", err=True)


def _progress_enabled(requested: bool | None) -> bool:
    return sys.stderr.isatty() if requested is None else requested


_progress_option = click.option(
    "--progress/--no-progress",
    default=None,
    help="progress lines on stderr (default: when stderr is a terminal)",
)


@audit_group.command("verify")
@click.option("--head", "expected_head", help="a head SEQ:HASH printed by an earlier verify")
@click.option("--no-seal", is_flag=True, help="check only; seal nothing first")
@_progress_option
@click.pass_context
def verify_command(
    ctx: click.Context, expected_head: str | None, no_seal: bool, progress: bool | None
) -> None:
    """Check the whole chain, row by row (exit 1 on any break)."""
    if expected_head is not None and not _valid_head(expected_head):
        raise click.BadParameter("SEQ:HASH, e.g. 1204:9f86d0...", param_hint="--head")
    lines = _Progress(_progress_enabled(progress))

    async def work(conn: asyncpg.Connection) -> tuple[audit.AuditVerdict, bool]:
        if not no_seal:
            await audit.seal(conn, progress=lines.sealed)
        verdict = await audit.verify_chain(conn, seal_first=False, progress=lines.checked)
        held = expected_head is None or await _head_holds(conn, expected_head)
        return verdict, held

    verdict, held = with_database(load_operator_settings(), work)
    for found in verdict.breaks:
        click.echo(_describe(found))
    if not held:
        click.echo(f"head {expected_head} is no longer in the chain: it was rebuilt")
    pending = f"; {verdict.unsealed} newer row(s) not sealed yet" if verdict.unsealed else ""
    if verdict.ok and held:
        click.echo(f"audit chain intact: {verdict.checked} row(s) sealed{pending}")
        click.echo(f"head {_head(verdict)}")
        return
    click.echo(
        f"audit chain BROKEN: {len(verdict.breaks) + (not held)} finding(s) in"
        f" {verdict.checked} sealed row(s){pending}"
    )
    ctx.exit(EXIT_BROKEN)


def _valid_head(text: str) -> bool:
    seq_text, sep, hash_text = text.partition(":")
    return bool(sep) and seq_text.isdigit() and len(hash_text) == 64 and _is_hex(hash_text)


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


@audit_group.command("seal")
@_progress_option
def seal_command(progress: bool | None) -> None:
    """Link every audit row of a finished transaction to the chain (the scheduler's
    `audit-seal` job does this every minute)."""
    lines = _Progress(_progress_enabled(progress))

    async def work(conn: asyncpg.Connection) -> int:
        return await audit.seal(conn, progress=lines.sealed)

    sealed = with_database(load_operator_settings(), work)
    click.echo(f"sealed {sealed} row(s)")


def _subject(text: str | None) -> tuple[str | None, str | None]:
    if text is None:
        return None, None
    kind, _, ident = text.partition(":")
    return kind, ident or None


def _values(value: Any) -> str:
    return "-" if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)


@audit_group.command("list")
@click.option("--subject", help="KIND or KIND:ID, e.g. payment:42, license:<uuid>, tenant:acme")
@click.option("--actor", help="e.g. operator:cli:ana, admin:ana, worker")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def list_command(subject: str | None, actor: str | None, limit: int, as_json: bool) -> None:
    """The newest audit rows: when, who, what, on which subject, before -> after, and why."""
    kind, ident = _subject(subject)

    async def work(conn: asyncpg.Connection) -> list[audit.AuditEvent]:
        return await audit.list_events(
            conn, subject_kind=kind, subject_id=ident, actor=actor, limit=limit
        )

    events = with_database(load_operator_settings(), work)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "id": event.id,
                        "seq": event.seq,
                        "recorded_at": event.recorded_at.isoformat(),
                        "actor": event.actor,
                        "action": event.action,
                        "subject_kind": event.subject_kind,
                        "subject_id": event.subject_id,
                        "before": event.before,
                        "after": event.after,
                        "cause": event.cause,
                    }
                    for event in events
                ],
                indent=2,
            )
        )
        return
    if not events:
        click.echo("no audit rows")
        return
    for event in events:
        sealed = f"#{event.seq}" if event.seq is not None else "unsealed"
        click.echo(
            f"{event.id:>8} {sealed:>9} {event.recorded_at.isoformat(timespec='seconds')} "
            f"{event.actor}  {event.action}  {event.subject_kind}:{event.subject_id}  "
            f"{_values(event.before)} -> {_values(event.after)}  cause {event.cause}"
        )


COMMANDS = [audit_group]
