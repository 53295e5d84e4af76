"""`colmena license`: make a signing key, check a key, revoke a license, resend its link.

`verify` exits 0 when the signature holds and 1 when it does not; `revoke` and `resend` exit 1
for an unknown license. Settings or database trouble exits 2, as everywhere.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import click

from colmena.cli.database import with_database
from colmena.config import Settings, SettingsError, load_settings
from colmena.domain.licensing import (
    LicenseKeyError,
    SigningKeyError,
    generate_key_pair,
    load_public_key,
    verify_license_key,
)
from colmena.gateways.license_keys import public_key
from colmena.runtime.publisher import AmqpPublisher
from colmena.store import licenses as store
from colmena.store import outbox

PRIVATE_KEY_FILE = "license-signing-key.pem"
PUBLIC_KEY_FILE = "license-public-key.pem"


@click.group("license")
def license_group() -> None:
    """Signed licenses: signing keys, verification, revocation, resending download links."""


@license_group.command("keygen")
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="directory for license-signing-key.pem and license-public-key.pem",
)
def keygen_command(out_dir: Path) -> None:
    """Write a new Ed25519 key pair; refuses to overwrite existing files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out_dir / PRIVATE_KEY_FILE, out_dir / PUBLIC_KEY_FILE
    existing = [str(p) for p in (private_path, public_path) if p.exists()]
    if existing:
        raise click.ClickException(f"refusing to overwrite {', '.join(existing)}")
    pair = generate_key_pair()
    _write_new(private_path, pair.private_pem, mode=0o600)
    _write_new(public_path, pair.public_pem, mode=0o644)
    click.echo(
        f"private key: {private_path} (mode 0600; put its contents in COLMENA_LICENSE_SIGNING_KEY "
        "for the workers, then keep it in your secret store only)"
    )
    click.echo(
        f"public key:  {public_path} (ship it with your software; "
        "COLMENA_LICENSE_PUBLIC_KEY for the ingress)"
    )


def _write_new(path: Path, text: str, *, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)


@license_group.command("verify")
@click.argument("key")
@click.option(
    "--public-key",
    "public_key_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM file to verify with; default: the configured key",
)
@click.pass_context
def verify_command(ctx: click.Context, key: str, public_key_file: Path | None) -> None:
    """Print the license KEY proves, and whether its signature holds (exit 0) or not (exit 1)."""
    try:
        verifier = (
            load_public_key(public_key_file.read_text())
            if public_key_file
            else public_key(load_settings())
        )
    except SigningKeyError as exc:
        raise SettingsError(str(exc)) from None
    try:
        license = verify_license_key(key, verifier)
    except LicenseKeyError as exc:
        claimed = _unverified_payload(key)
        if claimed is not None:
            click.echo("license (as claimed, NOT verified):")
            click.echo(json.dumps(claimed, indent=2, sort_keys=True, ensure_ascii=False))
        click.echo(f"signature: INVALID: {exc}")
        ctx.exit(1)
    click.echo(json.dumps(license.to_document(), indent=2, sort_keys=True, ensure_ascii=False))
    click.echo("signature: valid")


def _unverified_payload(key: str) -> Any:
    """What a key claims, for the operator's eyes only, when its signature fails."""
    payload = "".join(key.split()).partition(".")[0]
    try:
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return None


@license_group.command("revoke")
@click.argument("license_id", type=click.UUID)
@click.option("--reason", default="revoked by an operator", show_default=True)
def revoke_command(license_id: uuid.UUID, reason: str) -> None:
    """Revoke LICENSE_ID: status checks answer "revoked" and its download links stop working."""

    async def work(conn: asyncpg.Connection) -> store.LicenseRecord | None:
        async with conn.transaction():
            record = await store.get(conn, license_id)
            if record is not None:
                await store.revoke(conn, license_id, reason)
            return record

    record = with_database(load_settings(), work)
    if record is None:
        raise click.ClickException(f"no license {license_id}")
    if record.revoked_at is not None:
        revoked_at = record.revoked_at.isoformat(timespec="seconds")
        click.echo(f"license {license_id} was already revoked at {revoked_at}")
    else:
        click.echo(f"license {license_id} revoked; its download links no longer work")


@license_group.command("resend")
@click.argument("license_id", type=click.UUID)
def resend_command(license_id: uuid.UUID) -> None:
    """Email LICENSE_ID's customer a fresh download link; older links stop working now."""
    settings = load_settings()

    async def work(conn: asyncpg.Connection) -> tuple[store.LicenseRecord | None, bool]:
        async with conn.transaction():
            record = await store.get(conn, license_id)
            if record is None or record.revoked_at is not None:
                return record, False
            await store.supersede_unsent(conn, license_id)
            await store.invalidate_links(conn, license_id)
            email_id = await store.add_email(conn, license_id, "resend")
            row = await outbox.record(
                conn,
                queue="licenses",
                actor="send_license_email",
                args=[email_id],
                dedupe_key=f"license-email:{email_id}",
            )
        return record, await _publish(conn, settings, row)

    record, published = with_database(settings, work)
    if record is None:
        raise click.ClickException(f"no license {license_id}")
    if record.revoked_at is not None:
        raise click.ClickException(f"license {license_id} is revoked; nothing to resend")
    where = "queued" if published else "recorded in the outbox; the scheduler's relay will queue it"
    click.echo(
        f"new link for license {license_id} to {record.customer_email}: {where}; "
        "older links no longer work"
    )


async def _publish(
    conn: asyncpg.Connection, settings: Settings, row: outbox.OutboxMessage | None
) -> bool:
    """Publish now when a broker is configured; otherwise (or if it is down) the relay will."""
    if row is None or settings.broker_url is None:
        return False
    publisher = AmqpPublisher(
        settings.broker_url.get_secret_value(), settings.queue_prefix, quorum=settings.quorum_queues
    )
    try:
        [ok] = await publisher.publish_many([row])
    finally:
        await publisher.close()
    if ok:
        await outbox.mark_published(conn, [row.id])
    return ok


COMMANDS = [license_group]
