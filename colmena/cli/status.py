"""`colmena status`: one screen with what an operator checks first, `--json` for scripts."""

from __future__ import annotations

import asyncio
import json
import sys

import click

from colmena.config import load_settings
from colmena.config.dev_stack import operator_settings
from colmena.domain.durations import age_text
from colmena.runtime.queue_admin import queue_admin_for
from colmena.runtime.status import Snapshot, collect

EXIT_BROKER_UNREACHABLE = 1


def _render(snapshot: Snapshot) -> list[str]:
    lines = []
    if snapshot.queues is None:
        lines.append(f"queues: {snapshot.broker_error}")
    else:
        lines.append(f"{'queue':<10} {'ready':>7} {'delayed':>8} {'dead':>6} {'consumers':>10}")
        for depth in snapshot.queues:
            lines.append(
                f"{depth.queue:<10} {depth.ready:>7} {depth.delayed:>8} {depth.dead:>6} "
                f"{depth.consumers:>10}"
            )
        hint = "  (colmena dlq list)" if snapshot.dead_letters else ""
        lines.append(f"dead letters: {snapshot.dead_letters}{hint}")
    oldest = f", oldest {age_text(snapshot.outbox_oldest_age_s)}" if snapshot.outbox_pending else ""
    lines.append(f"outbox: {snapshot.outbox_pending} pending{oldest}")
    if snapshot.rates is None:
        lines.append("rates: not installed")
    elif not snapshot.rates:
        lines.append("rates: none published yet")
    else:
        lines.append("rates:")
        for rate in snapshot.rates:
            stale = "  SOURCE STALE" if rate.source_stale else ""
            lines.append(
                f"  {rate.source:<8} {rate.pair:<9} {rate.value:>14} {rate.status:<10} "
                f"{rate.effective_date}  seen {age_text(rate.age_s)} ago{stale}"
            )
    if snapshot.bots is None:
        lines.append("bots: not installed")
    else:
        counts = ", ".join(f"{state} {count}" for state, count in snapshot.bots.items()) or "none"
        lines.append(f"bots: {counts}")
    return lines


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="one JSON document for scripts")
def status_command(as_json: bool) -> None:
    """Queue depths and consumers, dead letters, outbox backlog, last rates, bots by state.

    Exits 1 when the broker does not answer (the database part is still shown). With no
    COLMENA_* settings it reads the `colmena dev` running in this directory.
    """
    settings, stack = operator_settings(load_settings())
    snapshot = asyncio.run(collect(settings, queue_admin_for(settings, stack)))
    if as_json:
        click.echo(json.dumps(snapshot.to_json(), indent=2))
    else:
        for line in _render(snapshot):
            click.echo(line)
    if snapshot.queues is None:
        sys.exit(EXIT_BROKER_UNREACHABLE)


COMMANDS = [status_command]
