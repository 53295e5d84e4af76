"""One module per domain. `import_all` registers every actor and scheduled job.

Importing the package alone imports no domain module, so a CLI command or the ingress that needs
one helper (say `colmena.actors.outbox`) does not pay for loading every domain's libraries.
"""

from __future__ import annotations

import importlib

ACTOR_MODULES = (
    "payments",
    "rates",
    "licenses",
    "stamping",
    "bots",
)


def import_all() -> None:
    for name in ACTOR_MODULES:
        importlib.import_module(f"colmena.actors.{name}")
