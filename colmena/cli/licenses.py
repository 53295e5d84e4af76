"""`colmena license`: make a signing key, check a key, find a license, revoke it, resend its link.

`list` and `show` find licenses by payment (colmena's id or the provider's) or by customer
email, with what `resend` and `revoke` need: the license id, its status, whether its email went
out and whether its link still works. `verify` exits 0 when the signature holds and 1 when it
does not; `show`, `revoke` and `resend` exit 1 for an unknown license. Settings or database
trouble exits 2, as everywhere.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import click

from colmena.cli.audit import attribute_operator, record_operator_action
from colmena.cli.database import with_database
from colmena.config import Settings, SettingsError
from colmena.config.dev_stack import load_operator_settings
from colmena.domain.licensing import (
    LicenseKeyError,
    SigningKeyError,
    generate_key_pair,
    load_public_key,
    status_at,
    verify_license_key,
)
from colmena.domain.money import format_minor, from_minor
from colmena.gateways.license_keys import public_key
from colmena.runtime.startup import amqp_publisher
from colmena.store import licenses as store
from colmena.store import outbox

PRIVATE_KEY_FILE = "license-signing-key.pem"
PUBLIC_KEY_FILE = "license-public-key.pem"


@click.group("license")
def license_group() -> None:
    """Signed licenses: signing keys, verification, finding, revocation, resending links."""


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
            else public_key(load_operator_settings())
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


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


def _status(found: store.LicenseOverview, now: datetime) -> str:
    record = found.license
    revoked = record.revoked_at is not None
    return status_at(expires_at=record.expires_at, revoked=revoked, now=now).value


def _email_state(email: store.EmailRecord | None, *, detail: bool = False) -> str:
    """sent, superseded, queued (not tried yet) or not sent (tried; the error with `detail`)."""
    if email is None:
        return "none"
    if email.sent_at is not None:
        return f"sent {_when(email.sent_at)}" if detail else "sent"
    if email.superseded_at is not None:
        return "superseded"
    if email.attempts == 0:
        return "queued"
    if not detail:
        return "not sent"
    return f"not sent after {email.attempts} attempt(s): {email.last_error or 'no answer recorded'}"


def _link_state(link: store.LinkRecord | None, *, detail: bool = False) -> str:
    """The link's state; a usable link nobody was emailed is `unsent`."""
    if link is None:
        return "none"
    state = "unsent" if link.state == "usable" and link.emailed_at is None else link.state
    if not detail:
        return state
    return f"{state}, {link.used}/{link.max_downloads} downloads, expires {_when(link.expires_at)}"


def _package(record: store.LicenseRecord) -> str:
    """What the newest link downloads: assembled by the ingress, checked against this digest."""
    if record.package_sha256 is None or record.package_size is None:
        return "no digest yet (the next email records it)"
    return f"sha256 {record.package_sha256}, {record.package_size:,} bytes"


def _payment(found: store.LicenseOverview) -> str:
    return f"{found.provider} {found.provider_payment_id}"


def _json_time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _license_json(found: store.LicenseOverview, now: datetime) -> dict[str, Any]:
    """The list row for `--json`: the same facts, the amount as an exact decimal string."""
    record = found.license
    return {
        "license_id": str(record.id),
        "product": record.product_ref,
        "edition": record.edition,
        "seats": record.seats,
        "status": _status(found, now),
        "customer_email": record.customer_email,
        "payment_id": record.payment_id,
        "provider": found.provider,
        "provider_payment_id": found.provider_payment_id,
        "amount": str(from_minor(found.amount_minor, found.currency)),
        "currency": found.currency,
        "issued_at": _json_time(record.issued_at),
        "expires_at": _json_time(record.expires_at),
        "revoked_at": _json_time(record.revoked_at),
        "suspended_at": _json_time(record.suspended_at),
        "suspended_reason": record.suspended_reason,
        "email": _email_state(found.email),
        "email_sent_at": _json_time(found.email.sent_at if found.email else None),
        "link": _link_state(found.link),
        "link_expires_at": _json_time(found.link.expires_at if found.link else None),
    }


@license_group.command("list")
@click.option(
    "--payment", help="colmena's payment id or the provider's (pi_..., a Mercado Pago id)"
)
@click.option("--email", help="the customer's email")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def list_command(payment: str | None, email: str | None, limit: int, as_json: bool) -> None:
    """Licenses, newest first: id, product, seats, status, payment, amount, email and link."""

    async def work(conn: asyncpg.Connection) -> list[store.LicenseOverview]:
        return await store.overview(conn, payment=payment, email=email, limit=limit)

    found = with_database(load_operator_settings(), work)
    now = datetime.now(UTC)
    if as_json:
        click.echo(json.dumps([_license_json(item, now) for item in found], indent=2))
        return
    if not found:
        click.echo("no licenses")
        return
    click.echo(
        f"{'license':<36}  {'product (edition)':<32} {'seats':>5}  {'status':<8} "
        f"{'payment':<36} {'amount':>16}  {'email':<10} {'link':<8} customer"
    )
    for item in found:
        record = item.license
        click.echo(
            f"{record.id!s:<36}  {f'{record.product_ref} ({record.edition})':<32} "
            f"{record.seats:>5}  {_status(item, now):<8} {_payment(item):<36} "
            f"{format_minor(item.amount_minor, item.currency):>16}  "
            f"{_email_state(item.email):<10} {_link_state(item.link):<8} {record.customer_email}"
        )


def _filters(which: str) -> dict[str, Any]:
    """What WHICH names: a license id, a customer email, or else a payment."""
    if "@" in which:
        return {"email": which}
    try:
        return {"license_id": uuid.UUID(which)}
    except ValueError:
        return {"payment": which}


@license_group.command("show")
@click.argument("which")
def show_command(which: str) -> None:
    """Everything about the licenses WHICH names (a license id, a payment id, colmena's or the
    provider's, or a customer email): status, payment, every email and link."""

    async def work(
        conn: asyncpg.Connection,
    ) -> list[tuple[store.LicenseOverview, list[store.EmailRecord], list[store.LinkRecord]]]:
        found = await store.overview(conn, **_filters(which))
        return [
            (
                item,
                await store.emails_of(conn, item.license.id),
                await store.links_of(conn, item.license.id),
            )
            for item in found
        ]

    found = with_database(load_operator_settings(), work)
    if not found:
        raise click.ClickException(f"no license for {which}")
    now = datetime.now(UTC)
    for index, (item, emails, links) in enumerate(found):
        record = item.license
        status = _status(item, now)
        if record.revoked_at is not None:
            status += f" at {_when(record.revoked_at)} ({record.revoked_reason or 'no reason'})"
        elif record.suspended_at is not None:
            status += (
                f", suspended since {_when(record.suspended_at)}"
                f" ({record.suspended_reason or 'no reason'}): its links work again if the"
                " dispute is won"
            )
        fields = [
            ("license", str(record.id)),
            ("product", f"{record.product_ref}, edition {record.edition}, {record.seats} seat(s)"),
            ("status", status),
            ("customer", f"{record.customer_email} ({record.customer_locale or 'no locale'})"),
            (
                "payment",
                f"{_payment(item)} (#{record.payment_id}), "
                f"{format_minor(item.amount_minor, item.currency)}",
            ),
            ("issued", _when(record.issued_at)),
            ("expires", _when(record.expires_at) if record.expires_at else "never (perpetual)"),
            ("package", _package(record)),
        ]
        fields += [
            (f"email #{email.id}", f"{email.reason}: {_email_state(email, detail=True)}")
            for email in emails
        ]
        fields += [(f"link #{link.id}", _link_state(link, detail=True)) for link in links]
        if not links:
            fields.append(("links", "none (dead links are deleted after the retention period)"))
        if record.revoked_at is None:
            fields += [
                ("resend", f"colmena license resend {record.id}  (a fresh link; older ones die)"),
                ("revoke", f"colmena license revoke {record.id}"),
            ]
        if index:
            click.echo("")
        width = max(len(name) for name, _ in fields)
        for name, value in fields:
            click.echo(f"{name:<{width}}  {value}")


@license_group.command("revoke")
@click.argument("license_id", type=click.UUID)
@click.option("--reason", default="revoked by an operator", show_default=True)
def revoke_command(license_id: uuid.UUID, reason: str) -> None:
    """Revoke LICENSE_ID: status checks answer "revoked" and its download links stop working."""

    async def work(conn: asyncpg.Connection) -> store.LicenseRecord | None:
        async with conn.transaction():
            await attribute_operator(conn, "license revoke")
            record = await store.get(conn, license_id)
            if record is not None:
                await store.revoke(conn, license_id, reason)
            return record

    record = with_database(load_operator_settings(), work)
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
    settings = load_operator_settings()

    async def work(conn: asyncpg.Connection) -> tuple[store.LicenseRecord | None, bool]:
        async with conn.transaction():
            record = await store.get(conn, license_id)
            if record is None or record.revoked_at is not None:
                return record, False
            await store.supersede_unsent(conn, license_id)
            await store.invalidate_links(conn, license_id)
            email_id = await store.add_email(conn, license_id, "resend")
            await record_operator_action(
                conn,
                "license resend",
                action="license.resend",
                subject_kind="license",
                subject_id=str(license_id),
                after={"email_id": email_id},
            )
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
    publisher = amqp_publisher(settings)
    try:
        [ok] = await publisher.publish_many([row])
    finally:
        await publisher.close()
    if ok:
        await outbox.mark_published(conn, [row.id])
    return ok


COMMANDS = [license_group]
