"""`colmena tenants`, `colmena keys`, `colmena bots`: tenants, their tokens and keys, their bots.

A token is printed once, when made (create, rotate); the database keeps only its SHA-256.
`keys rotate` re-encrypts every stored provider key with the newest COLMENA_SECRET_KEYS key in
one transaction (all or nothing); `keys keygen` makes the X25519 pair that seals provider keys
from the ingress to the bots workers. `bots list` shows what the last reconcile pass observed;
`bots reset` lifts a crashloop and asks for a reconcile.
"""

from __future__ import annotations

import asyncpg
import click

from colmena.actors.bots import change_plan
from colmena.cli.audit import attribute_operator, record_operator_action
from colmena.cli.database import with_database
from colmena.config import Settings
from colmena.config.dev_stack import load_operator_settings
from colmena.domain.key_sealing import encode_key, generate_private_key, public_key_of
from colmena.domain.tenants import (
    DEFAULT_CONFIG,
    TENANT_ID,
    PlanLimits,
    fit_to_plan,
    new_tenant_id,
    new_token,
    token_digest,
)
from colmena.runtime.startup import amqp_publisher
from colmena.store import outbox, provider_keys
from colmena.store import tenants as store
from colmena.supervisor.keys import newest_key_version, secret_box
from colmena.supervisor.secrets import SecretDecryptError


async def _publish(
    conn: asyncpg.Connection, settings: Settings, rows: list[outbox.OutboxMessage | None]
) -> bool:
    """Publish now when a broker is configured; otherwise (or if it is down) the relay will."""
    pending = [row for row in rows if row is not None]
    if not pending or settings.broker_url is None:
        return False
    publisher = amqp_publisher(settings)
    try:
        results = await publisher.publish_many(pending)
    finally:
        await publisher.close()
    await outbox.mark_published(
        conn, [row.id for row, ok in zip(pending, results, strict=True) if ok]
    )
    return all(results)


@click.group("tenants")
def tenants_group() -> None:
    """Tenants of the bot service: create them, list them, rotate their API tokens."""


@tenants_group.command("create")
@click.option("--email", required=True)
@click.option(
    "--plan", default="free", show_default=True, help="free, pro, enterprise (or any row of plans)"
)
@click.option(
    "--id",
    "tenant_id",
    help="tenant id (what payments metadata tenant_id names); default: generated",
)
def create_command(email: str, plan: str, tenant_id: str | None) -> None:
    """Create a tenant with a stopped bot and print its API token (shown this once)."""
    settings = load_operator_settings()
    tenant_id = tenant_id or new_tenant_id()
    if not TENANT_ID.fullmatch(tenant_id):
        raise click.ClickException(
            "--id: letters, digits, '.', '_' and '-', starting with a letter or digit, up to 63"
        )
    if "@" not in email:
        raise click.ClickException("--email does not look like an email address")
    token = new_token()

    async def work(conn: asyncpg.Connection) -> tuple[store.Tenant | None, list[str]]:
        async with conn.transaction():
            await attribute_operator(conn, "tenants create")
            chosen = await store.get_plan(conn, plan)
            if chosen is None:
                names = ", ".join(p.name for p in await store.list_plans(conn))
                raise click.ClickException(f"no plan {plan!r} (plans: {names})")
            config = fit_to_plan(
                DEFAULT_CONFIG, PlanLimits(chosen.max_symbols, chosen.live_allowed)
            )
            tenant = await store.create_tenant(
                conn,
                tenant_id=tenant_id,
                email=email,
                plan=plan,
                token_sha256=token_digest(token),
                config=config,
            )
            if tenant is None:
                return None, []
            outcomes, rows = [], []
            for change in await store.waiting_plan_changes(conn, tenant_id):
                outcome, row = await change_plan(
                    conn,
                    tenant_id,
                    change["plan"],
                    change["active"],
                    change["source"],
                    change["provider_at"],
                )
                outcomes.append(
                    f"{change['source']} ({change['plan']}, active={change['active']}): {outcome}"
                )
                rows.append(row)
            final = await store.get_tenant(conn, tenant_id)
        await _publish(conn, settings, rows)
        return final, outcomes

    tenant, outcomes = with_database(settings, work)
    if tenant is None:
        raise click.ClickException(f"tenant {tenant_id} already exists")
    click.echo(f"tenant {tenant.id} ({tenant.email}) on plan {tenant.plan}")
    for line in outcomes:
        click.echo(f"  plan change that was waiting for it: {line}")
    click.echo(f"API token (shown once; only its SHA-256 is kept): {token}")


@tenants_group.command("list")
def list_command() -> None:
    """Every tenant: id, plan, email, created."""
    tenants = with_database(load_operator_settings(), store.list_tenants)
    click.echo(f"{'TENANT':<24} {'PLAN':<12} {'CREATED':<20} EMAIL")
    for tenant in tenants:
        click.echo(
            f"{tenant.id:<24} {tenant.plan:<12} "
            f"{tenant.created_at:%Y-%m-%d %H:%M:%S}  {tenant.email}"
        )


@tenants_group.group("token")
def token_group() -> None:
    """API tokens."""


@token_group.command("rotate")
@click.argument("tenant_id")
def rotate_token_command(tenant_id: str) -> None:
    """Replace TENANT_ID's API token; the old one stops working at once."""
    token = new_token()

    async def work(conn: asyncpg.Connection) -> bool:
        async with conn.transaction():
            await attribute_operator(conn, "tenants token rotate")
            return await store.set_token(conn, tenant_id, token_digest(token))

    if not with_database(load_operator_settings(), work):
        raise click.ClickException(f"no tenant {tenant_id}")
    click.echo(f"new API token for {tenant_id} (shown once; the old one no longer works): {token}")


@click.group("keys")
def keys_group() -> None:
    """Tenants' provider keys, encrypted with COLMENA_SECRET_KEYS."""


@keys_group.command("keygen")
def keygen_command() -> None:
    """Print a new key pair that seals provider keys on their way to the bots workers.

    The public key goes to the ingress, the private key (a secret) to the bots workers only.
    """
    private_key = generate_private_key()
    click.echo(f"COLMENA_KEY_SEAL_PUBLIC_KEY={encode_key(public_key_of(private_key))}")
    click.echo(f"COLMENA_KEY_SEAL_PRIVATE_KEY={encode_key(private_key)}")


@keys_group.command("rotate")
def rotate_keys_command() -> None:
    """Re-encrypt every stored key with the newest key; then the older keys can be retired."""
    settings = load_operator_settings()
    box, version = secret_box(settings), newest_key_version(settings)

    async def work(conn: asyncpg.Connection) -> int:
        async with conn.transaction():
            await attribute_operator(conn, "keys rotate")
            rows = await provider_keys.lock_all_keys(conn)
            for key_id, ciphertext in rows:
                try:
                    rotated = box.rotate(ciphertext)
                except SecretDecryptError:
                    raise click.ClickException(
                        f"provider key row {key_id} opens with none of COLMENA_SECRET_KEYS; "
                        "nothing was changed"
                    ) from None
                await provider_keys.replace_ciphertext(conn, key_id, rotated, version)
        return len(rows)

    count = with_database(settings, work)
    click.echo(
        f"{count} provider key(s) re-encrypted with key {version}; older keys can now be removed "
        "from COLMENA_SECRET_KEYS"
    )


@click.group("bots")
def bots_group() -> None:
    """Tenants' bots as the supervisor sees them."""


def _health(bot: store.BotRow) -> str:
    if bot.observed != "running" or bot.healthy is None:
        return "-"
    return "healthy" if bot.healthy else "unhealthy"


@bots_group.command("list")
def bots_list_command() -> None:
    """Tenant, desired and actual state (as of the last pass), restarts, health."""
    bots = with_database(load_operator_settings(), store.list_bots)
    click.echo(
        f"{'TENANT':<24} {'PLAN':<11} {'DESIRED':<8} {'ACTUAL':<10} {'RESTARTS':>8} "
        f"{'HEALTH':<10} SEEN"
    )
    for bot in bots:
        seen = f"{bot.observed_at:%Y-%m-%d %H:%M:%S}" if bot.observed_at else "never"
        click.echo(
            f"{bot.tenant_id:<24} {bot.plan.name:<11} {bot.desired:<8} {bot.observed:<10} "
            f"{bot.restarts_total:>8} {_health(bot):<10} {seen}"
        )
        if bot.crashloop:
            click.echo(
                f"{'':<24} crashloop: {bot.crashloop_reason}; `colmena bots reset {bot.tenant_id}`"
            )


@bots_group.command("reset")
@click.argument("tenant_id")
def bots_reset_command(tenant_id: str) -> None:
    """Lift TENANT_ID's crashloop (restart history cleared) and reconcile it now."""
    settings = load_operator_settings()

    async def work(conn: asyncpg.Connection) -> tuple[bool, bool]:
        async with conn.transaction():
            if not await store.reset_restarts(conn, tenant_id):
                return False, False
            await record_operator_action(
                conn, "bots reset", action="bot.reset", subject_kind="bot", subject_id=tenant_id
            )
            row = await store.record_reconcile(conn, tenant_id)
        return True, await _publish(conn, settings, [row])

    found, published = with_database(settings, work)
    if not found:
        raise click.ClickException(f"no tenant {tenant_id}")
    where = "queued" if published else "recorded in the outbox; the relay will queue it"
    click.echo(f"restart history of {tenant_id} cleared; reconcile {where}")


COMMANDS = [tenants_group, keys_group, bots_group]
