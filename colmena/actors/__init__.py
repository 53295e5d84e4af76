"""One module per domain. `all_actors` and `all_jobs` import them all and return what they
registered, for the entry points that declare actors on a broker or run the scheduler.

Importing the package alone imports no domain module, so a CLI command that needs one actor
module does not pay for loading every domain's libraries.
"""

from __future__ import annotations

import importlib

from colmena.runtime.registry import ActorSpec, registered_actors
from colmena.runtime.scheduler import ScheduledJob, registered_jobs

ACTOR_MODULES = (
    "payments",
    "bitso",
    "accounts",
    "orders",
    "rates",
    "licenses",
    "stamping",
    "credit_notes",
    "global_invoice",
    "bots",
    "audit",
    "backups",
    "health_report",
    "notifications",
)


def import_all() -> None:
    for name in ACTOR_MODULES:
        importlib.import_module(f"colmena.actors.{name}")


def all_actors() -> list[ActorSpec]:
    """Every actor of every domain."""
    import_all()
    return registered_actors()


def all_jobs() -> list[ScheduledJob]:
    """Every scheduled job of every domain (the outbox relay is the scheduler's own)."""
    import_all()
    return registered_jobs()
