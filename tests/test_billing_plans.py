"""What Stripe's subscription events do to a tenant's plan, and the capital a plan allows (pure)."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from colmena.domain.payment_events import Ignored, PaymentUpdate, PlanUpdate, interpret_stripe
from colmena.domain.payment_state import Status
from colmena.domain.plans import paying_subscription
from colmena.domain.tenants import (
    ConfigError,
    PlanLimits,
    capital_over_plan,
    fit_to_plan,
    validate_config,
)
from colmena.gateways import sample_events as events

METADATA = {"tenant_id": "t-billing", "plan": "pro", "product_kind": "plan"}
NOW = int(time.time())
DAY = 86_400


def subscription_event(kind: str, status: str, **fields: object) -> dict:
    obj = events.subscription(subscription_id="sub_1", status=status, metadata=METADATA)
    obj.update(fields)
    return events.stripe_event(kind, obj, created=NOW)


def plan_effect(event: dict) -> bool | None:
    """True: the plan holds or starts; False: back to free; None: nothing changes."""
    read = interpret_stripe(event)
    if isinstance(read, Ignored):
        return None
    assert isinstance(read, PlanUpdate)
    assert (read.tenant_ref, read.plan, read.source) == ("t-billing", "pro", "subscription:sub_1")
    return read.active


@pytest.mark.parametrize(
    ("kind", "status", "expected"),
    [
        ("customer.subscription.created", "active", True),  # an upgrade applies at once
        ("customer.subscription.created", "incomplete", None),  # not paid yet
        ("customer.subscription.updated", "trialing", True),
        ("customer.subscription.updated", "past_due", True),  # dunning: retries still running
        ("customer.subscription.updated", "unpaid", False),  # retries exhausted
        ("customer.subscription.updated", "canceled", False),
        ("customer.subscription.updated", "incomplete_expired", False),
        ("customer.subscription.updated", "paused", False),
        ("customer.subscription.deleted", "canceled", False),
    ],
)
def test_subscription_status_moves_the_plan_as_stripe_documents(kind, status, expected) -> None:
    assert plan_effect(subscription_event(kind, status)) is expected


def test_cancellation_at_period_end_keeps_the_plan_until_the_period_ends() -> None:
    items = {"object": "list", "data": [{"id": "si_1", "current_period_end": NOW + 20 * DAY}]}
    scheduled = subscription_event(
        "customer.subscription.updated", "active", cancel_at_period_end=True, items=items
    )
    assert plan_effect(scheduled) is True
    # An event that itself says the cancellation time has passed ends the plan.
    passed = subscription_event(
        "customer.subscription.updated", "active", cancel_at_period_end=True, cancel_at=NOW - 1
    )
    assert plan_effect(passed) is False


def test_a_failed_renewal_invoice_is_a_rejected_payment_not_a_plan_change() -> None:
    invoice = events.invoice(subscription_id="sub_1", metadata=METADATA, paid=False)
    read = interpret_stripe(events.stripe_event("invoice.payment_failed", invoice, created=NOW))
    assert isinstance(read, PaymentUpdate) and read.status is Status.REJECTED
    assert read.metadata["subscription"] == "sub_1" and read.product_kind == "plan"


def test_subscription_without_colmena_metadata_is_ignored() -> None:
    obj = events.subscription(subscription_id="sub_2", status="active", metadata={})
    read = interpret_stripe(events.stripe_event("customer.subscription.created", obj))
    assert isinstance(read, Ignored)


FREE = PlanLimits(max_symbols=1, live_allowed=False, max_capital=Decimal("1000"))


def test_capital_over_the_plan_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ConfigError) as refused:
        validate_config(
            {"symbols": ["BTCUSDT"], "mode": "paper", "capital": "1000.01"}, "free", FREE
        )
    assert [(e.field, e.message) for e in refused.value.errors] == [
        ("capital", "plan free allows a capital of at most 1000")
    ]
    fits = validate_config(
        {"symbols": ["BTCUSDT"], "mode": "paper", "capital": "1000"}, "free", FREE
    )
    assert fits["capital"] == "1000"


def test_a_shrinking_plan_never_trims_capital() -> None:
    config = {"symbols": ["BTCUSDT", "ETHUSDT"], "mode": "live", "capital": "5000"}
    fitted = fit_to_plan(config, FREE)
    assert fitted == {"symbols": ["BTCUSDT"], "mode": "paper", "capital": "5000"}
    assert capital_over_plan(fitted, FREE) == Decimal("5000")
    assert capital_over_plan(fitted, PlanLimits(5, True, Decimal("100000"))) is None


@pytest.mark.parametrize(
    ("plan", "source", "subscription"),
    [
        ("pro", "subscription:sub_1", "sub_1"),
        ("enterprise", "subscription:sub_2", "sub_2"),
        ("free", "subscription:sub_1", None),  # ended: a new checkout, not a switch
        ("pro", "operator", None),
        ("pro", "payment:7", None),
        ("pro", None, None),
        ("pro", "subscription:", None),
    ],
)
def test_a_paid_plan_is_switched_only_on_the_subscription_it_comes_from(
    plan, source, subscription
) -> None:
    assert paying_subscription(plan, source) == subscription
