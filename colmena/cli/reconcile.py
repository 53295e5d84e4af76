"""`colmena reconcile`: repair what providers' webhooks missed, and report what disagrees.

The group is put together here from its two commands, each beside its own helpers (the
Mercado Pago repair in `colmena.cli.payments`, the report in `colmena.cli.reports`), so that no
command module adds to another's group when it is imported: `colmena.cli` imports only the
module its table names for a command.
"""

from __future__ import annotations

import click

from colmena.cli.payments import reconcile_mercadopago
from colmena.cli.reports import reconcile_report


@click.group("reconcile")
def reconcile() -> None:
    """Repair missed webhooks by asking the provider what happened."""


reconcile.add_command(reconcile_mercadopago)
reconcile.add_command(reconcile_report)

COMMANDS = [reconcile]
