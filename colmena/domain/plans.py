"""What a Stripe subscription's state means for the tenant's plan, following Stripe's lifecycle.

Stripe's subscription statuses (API reference, Subscription object):
- `active`, `trialing`: paid for (or in a trial): the plan holds.
- `past_due`: a renewal failed and Stripe's retries (Smart Retries, the dunning) are still
  running: the plan holds, as Stripe recommends, until the retries are exhausted.
- `unpaid`, `canceled`: the retries ran out (the account's settings pick which), or the
  subscription was cancelled: back to the free plan. So does `incomplete_expired` (the first
  payment never came) and `paused` (a trial ended without a payment method).
- `incomplete`: the first payment has not succeeded yet: nothing to grant or take away.

A cancellation at the period's end (`cancel_at_period_end`) keeps the status `active` until
Stripe ends the subscription and sends `customer.subscription.deleted`; only an event that
itself says the cancellation time has passed ends the plan earlier. Pure: the caller turns the
effect into a plan change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from colmena.domain.tenants import FREE_PLAN

HOLDS_PLAN = frozenset({"active", "trialing", "past_due"})
ENDS_PLAN = frozenset({"unpaid", "canceled", "incomplete_expired", "paused"})
NOT_STARTED = frozenset({"incomplete"})
SUBSCRIPTION_EVENTS = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
)


@dataclass(frozen=True)
class SubscriptionEffect:
    """`active` True: the plan holds (or starts); False: it ends; None: nothing changes."""

    active: bool | None
    reason: str


def cancels_at(subscription: dict[str, Any]) -> datetime | None:
    """When a scheduled cancellation takes effect: `cancel_at`, else with `cancel_at_period_end`
    the period's end (top level in older API versions, on the items since 2025-03-31)."""
    stamp = subscription.get("cancel_at")
    if not isinstance(stamp, int) and subscription.get("cancel_at_period_end"):
        stamp = subscription.get("current_period_end")
        if not isinstance(stamp, int):
            items = (subscription.get("items") or {}).get("data") or []
            ends = [item.get("current_period_end") for item in items if isinstance(item, dict)]
            stamp = max((end for end in ends if isinstance(end, int)), default=None)
    return datetime.fromtimestamp(stamp, tz=UTC) if isinstance(stamp, int) else None


def subscription_effect(
    event_type: str, subscription: dict[str, Any], event_at: datetime
) -> SubscriptionEffect:
    """The plan effect of one `customer.subscription.*` event."""
    if event_type == "customer.subscription.deleted":
        return SubscriptionEffect(False, "subscription ended")
    status = str(subscription.get("status"))
    if status in NOT_STARTED:
        return SubscriptionEffect(None, "first payment not made yet: invoice.paid starts the plan")
    if status in ENDS_PLAN:
        return SubscriptionEffect(False, f"subscription {status}")
    if status not in HOLDS_PLAN:
        return SubscriptionEffect(None, f"unknown subscription status {status!r}")
    ends = cancels_at(subscription)
    if ends is not None and ends <= event_at:
        return SubscriptionEffect(False, f"cancelled as of {ends.isoformat()}")
    if ends is not None:
        return SubscriptionEffect(True, f"{status}, cancels at {ends.isoformat()}")
    return SubscriptionEffect(True, status)


# A plan switch updates a subscription Stripe is charging normally; one whose renewal is being
# retried (past_due) or that has ended is settled in the portal, or bought anew, instead.
SWITCHABLE = frozenset({"active", "trialing"})
SUBSCRIPTION_SOURCE = "subscription:"


def paying_subscription(plan: str, plan_source: str | None) -> str | None:
    """The subscription a tenant's paid plan comes from (its plan source is
    `subscription:<id>`), or None: the tenant buys a plan with a new checkout."""
    if plan == FREE_PLAN or not (plan_source or "").startswith(SUBSCRIPTION_SOURCE):
        return None
    return str(plan_source).removeprefix(SUBSCRIPTION_SOURCE) or None
