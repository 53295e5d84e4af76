"""`colmena notifications`: tenants' notification deliveries, and replaying the dead ones.

`list` shows the newest deliveries (every tenant's, or `--tenant`'s; `--status dead` for the
dead letters of notifications), `replay` makes a dead delivery pending again with its attempts
from zero and publishes it (the relay does if no broker answers now); the replay is audited as
the operator's.
"""

from __future__ import annotations

import uuid

import asyncpg
import click

from colmena.cli.audit import record_operator_action
from colmena.cli.database import with_database
from colmena.config import Settings
from colmena.config.dev_stack import load_operator_settings
from colmena.domain.notifications import DELIVERY_STATES
from colmena.runtime.startup import amqp_publisher
from colmena.store import notifications as store
from colmena.store import outbox


async def _publish(
    conn: asyncpg.Connection, settings: Settings, rows: list[outbox.OutboxMessage]
) -> bool:
    """Publish now when a broker is configured; otherwise (or if it is down) the relay will."""
    if not rows or settings.broker_url is None:
        return False
    publisher = amqp_publisher(settings)
    try:
        results = await publisher.publish_many(rows)
    finally:
        await publisher.close()
    await outbox.mark_published(conn, [row.id for row, ok in zip(rows, results, strict=True) if ok])
    return all(results)


@click.group("notifications")
def notifications_group() -> None:
    """Tenants' notification deliveries (Telegram, signed webhooks)."""


@notifications_group.command("list")
@click.option("--tenant", "tenant_id", default=None, help="only this tenant's")
@click.option("--status", type=click.Choice(DELIVERY_STATES), default=None)
@click.option("--limit", type=click.IntRange(1, store.MAX_PAGE), default=50, show_default=True)
def list_command(tenant_id: str | None, status: str | None, limit: int) -> None:
    """The newest deliveries: id, tenant, event, channel, status, attempts, last error."""

    async def work(conn: asyncpg.Connection) -> list[store.Delivery]:
        return await store.list_deliveries(conn, tenant_id=tenant_id, status=status, limit=limit)

    deliveries = with_database(load_operator_settings(), work)
    click.echo(
        f"{'DELIVERY':<36}  {'TENANT':<16} {'EVENT':<14} {'CHANNEL':<8} {'STATUS':<9} "
        "TRIES  LAST ERROR"
    )
    for d in deliveries:
        click.echo(
            f"{d.id!s:<36}  {d.tenant_id:<16} {d.event_kind:<14} {d.channel:<8} {d.status:<9} "
            f"{d.attempts:>5}  {d.last_error or ''}"
        )


@notifications_group.command("replay")
@click.argument("delivery_id", type=click.UUID)
def replay_command(delivery_id: uuid.UUID) -> None:
    """Send the dead delivery DELIVERY_ID again (its attempts start over)."""
    settings = load_operator_settings()

    async def work(conn: asyncpg.Connection) -> tuple[str, bool]:
        async with conn.transaction():
            outcome, rows = await store.replay(conn, delivery_id, tenant_id=None)
            if outcome == "replayed":
                await record_operator_action(
                    conn,
                    "notifications replay",
                    action="notification.replay",
                    subject_kind="notification_delivery",
                    subject_id=str(delivery_id),
                    before={"status": "dead"},
                    after={"status": "pending"},
                )
        return outcome, await _publish(conn, settings, rows)

    outcome, published = with_database(settings, work)
    if outcome == "not_found":
        raise click.ClickException(f"no delivery {delivery_id}")
    if outcome == "not_dead":
        raise click.ClickException(f"delivery {delivery_id} is not dead: nothing to replay")
    if outcome == "endpoint_removed":
        raise click.ClickException(f"the endpoint of delivery {delivery_id} was removed")
    how = "queued" if published else "pending (the outbox relay will queue it)"
    click.echo(f"delivery {delivery_id} replayed: {how}")


COMMANDS = [notifications_group]
