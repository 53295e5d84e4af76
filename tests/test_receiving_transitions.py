"""Every move the payment machine allows, the ones it refuses, and the events that propose them.

Table-driven over `ALLOWED` itself, so a transition added to the table is tested by the same
rows; the refused pairs are the complement, each checked too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from colmena.domain.payment_events import (
    Ignored,
    PaymentUpdate,
    interpret_stripe,
    merchant_order_payments,
    snapshot_of_thin_event,
    stripe_handles,
)
from colmena.domain.payment_state import ALLOWED, Status, decide
from colmena.gateways import sample_events as events

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(seconds=5)

# PENDING and IN_PROCESS list themselves among their targets; `decide` answers "no change" to
# any status proposed again, which the last test shows for every status.
ALLOWED_PAIRS = sorted(
    (current, proposed)
    for current, targets in ALLOWED.items()
    for proposed in targets
    if proposed is not current
)
REFUSED_PAIRS = sorted(
    (current, proposed)
    for current in Status
    for proposed in Status
    if proposed not in ALLOWED[current] and proposed is not current
)


def test_the_table_names_every_status_and_final_states_lead_nowhere() -> None:
    assert set(ALLOWED) == set(Status)
    assert {status for status, targets in ALLOWED.items() if not targets} == {
        Status.CANCELLED,
        Status.REFUNDED,
        Status.CHARGED_BACK,
    }


@pytest.mark.parametrize(("current", "proposed"), ALLOWED_PAIRS, ids=lambda s: s.value)
def test_an_allowed_move_applies_when_not_older(current: Status, proposed: Status) -> None:
    assert decide(current, T0, proposed, LATER).apply
    assert decide(current, T0, proposed, T0).apply  # the same provider second is not stale


@pytest.mark.parametrize(
    ("current", "proposed"),
    [pair for pair in ALLOWED_PAIRS if pair[0] is not Status.NEW],
    ids=lambda s: s.value,
)
def test_an_allowed_move_stamped_earlier_is_stale(current: Status, proposed: Status) -> None:
    decision = decide(current, LATER, proposed, T0)
    assert not decision.apply
    assert decision.reason is not None and decision.reason.startswith("stale")


@pytest.mark.parametrize(("current", "proposed"), REFUSED_PAIRS, ids=lambda s: s.value)
def test_a_move_outside_the_table_is_refused(current: Status, proposed: Status) -> None:
    decision = decide(current, T0, proposed, LATER)
    assert decision == decision.__class__(
        False, f"transition {current} -> {proposed} is not allowed"
    )


@pytest.mark.parametrize(
    ("current", "proposed"),
    [
        (Status.REFUNDED, Status.APPROVED),  # a late approval never resurrects a refund
        (Status.CHARGED_BACK, Status.APPROVED),  # nor a lost dispute
        (Status.APPROVED, Status.PENDING),  # paid money never goes back to waiting
        (Status.AUTHORIZED, Status.IN_MEDIATION),  # nothing to dispute before capture
        (Status.CANCELLED, Status.APPROVED),
    ],
    ids=lambda s: s.value,
)
def test_representative_refusals(current: Status, proposed: Status) -> None:
    assert (current, proposed) in REFUSED_PAIRS
    assert not decide(current, T0, proposed, LATER).apply


@pytest.mark.parametrize("status", list(Status), ids=lambda s: s.value)
def test_the_same_status_again_is_no_change(status: Status) -> None:
    assert decide(status, T0, status, LATER).reason == ("no change")


def _read(kind: str, obj: dict) -> PaymentUpdate:
    update = interpret_stripe(events.stripe_event(kind, obj, created=int(T0.timestamp())))
    assert isinstance(update, PaymentUpdate), update
    return update


def test_payment_intent_payment_failed_rejects_the_intent() -> None:
    intent = events.payment_intent(status="requires_payment_method", metadata={"product": "x"})
    update = _read("payment_intent.payment_failed", intent)
    assert (update.provider_payment_id, update.status, update.amount_minor) == (
        intent["id"],
        Status.REJECTED,
        intent["amount"],
    )
    assert update.provider_at == T0
    # A failed attempt can be followed by a successful one on the same intent.
    assert decide(Status.REJECTED, T0, Status.APPROVED, LATER).apply


def _dispute(status: str, *, payment_intent: str | None = "pi_disputed") -> dict:
    return {
        "id": "dp_1",
        "object": "dispute",
        "amount": 150_000,
        "currency": "mxn",
        "charge": "ch_disputed",
        "payment_intent": payment_intent,
        "reason": "fraudulent",
        "status": status,
        "metadata": {},
    }


@pytest.mark.parametrize(
    ("kind", "dispute_status", "expected"),
    [
        ("charge.dispute.created", "needs_response", Status.IN_MEDIATION),
        ("charge.dispute.closed", "won", Status.APPROVED),
        ("charge.dispute.closed", "warning_closed", Status.APPROVED),
        ("charge.dispute.closed", "lost", Status.CHARGED_BACK),
    ],
)
def test_disputes_move_their_payment(kind: str, dispute_status: str, expected: Status) -> None:
    update = _read(kind, _dispute(dispute_status))
    assert (update.provider_payment_id, update.status) == ("pi_disputed", expected)


def test_a_dispute_without_intent_names_its_charge_and_an_odd_close_is_ignored() -> None:
    assert (
        _read(
            "charge.dispute.created", _dispute("needs_response", payment_intent=None)
        ).provider_payment_id
        == "ch_disputed"
    )
    closed = interpret_stripe(
        events.stripe_event("charge.dispute.closed", _dispute("under_review"))
    )
    assert isinstance(closed, Ignored)


def test_a_thin_event_reads_as_the_v1_event_it_stands_for() -> None:
    intent = events.payment_intent(amount=990)
    notification = {
        "id": "evt_test_65R1",
        "object": "v2.core.event",
        "type": "v1.payment_intent.succeeded",
        "created": "2025-03-01T12:00:00.123Z",
        "related_object": {"id": intent["id"], "type": "payment_intent", "url": "/v1/x"},
    }
    snapshot = snapshot_of_thin_event(notification, intent)
    update = interpret_stripe(snapshot)
    assert isinstance(update, PaymentUpdate)
    assert (update.status, update.amount_minor, update.provider_at) == (Status.APPROVED, 990, T0)
    assert stripe_handles("payment_intent.payment_failed")
    assert stripe_handles("charge.dispute.closed")
    assert not stripe_handles("customer.created")


def test_a_merchant_order_lists_each_payment_once_and_refuses_a_flood() -> None:
    order = {"payments": [{"id": 7}, {"id": 8}, {"id": 7}, {"status": "approved"}]}
    assert merchant_order_payments(order) == ["7", "8"]
    assert merchant_order_payments({"payments": None}) == []
    with pytest.raises(ValueError, match="more than"):
        merchant_order_payments({"payments": [{"id": n} for n in range(1, 30)]})
