"""The payment state machine shared by every provider.

Providers deliver at least once and in any order, so a status is applied only when it is (a) not
older than the status we hold, by the provider's own clock, and (b) a move the machine allows.
Anything else is recorded in the history and ignored: a late `approved` never resurrects a
refunded payment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Status(StrEnum):
    NEW = "new"
    PENDING = "pending"
    IN_PROCESS = "in_process"
    AUTHORIZED = "authorized"
    APPROVED = "approved"
    IN_MEDIATION = "in_mediation"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"
    CHARGED_BACK = "charged_back"


_OPEN = {
    Status.PENDING,
    Status.IN_PROCESS,
    Status.AUTHORIZED,
    Status.APPROVED,
    Status.REJECTED,
    Status.CANCELLED,
}

ALLOWED: dict[Status, frozenset[Status]] = {
    Status.NEW: frozenset(Status) - {Status.NEW},
    Status.PENDING: frozenset(_OPEN),
    Status.IN_PROCESS: frozenset(_OPEN),
    Status.AUTHORIZED: frozenset({Status.APPROVED, Status.CANCELLED, Status.REJECTED}),
    # A failed attempt on a Stripe PaymentIntent can be followed by a successful one.
    Status.REJECTED: frozenset({Status.PENDING, Status.IN_PROCESS, Status.APPROVED}),
    Status.APPROVED: frozenset({Status.IN_MEDIATION, Status.REFUNDED, Status.CHARGED_BACK}),
    Status.IN_MEDIATION: frozenset({Status.APPROVED, Status.REFUNDED, Status.CHARGED_BACK}),
    Status.CANCELLED: frozenset(),
    Status.REFUNDED: frozenset(),
    Status.CHARGED_BACK: frozenset(),
}

REVERSED = frozenset({Status.REFUNDED, Status.CHARGED_BACK})


@dataclass(frozen=True)
class Decision:
    apply: bool
    reason: str | None = None


def decide(
    current: Status, current_at: datetime, proposed: Status, proposed_at: datetime
) -> Decision:
    """Whether `proposed` (stamped `proposed_at` by the provider) may replace `current`."""
    if current is not Status.NEW and proposed_at < current_at:
        return Decision(
            False,
            f"stale: provider time {proposed_at.isoformat()} is before {current_at.isoformat()}",
        )
    if proposed == current:
        return Decision(False, "no change")
    if proposed not in ALLOWED[current]:
        return Decision(False, f"transition {current} -> {proposed} is not allowed")
    return Decision(True)
