"""Stripe's `GET /v1/balance_transactions` for the reconciliation's provider check: the charges
given, each as the balance transaction it made, newest first, filtered by `created[gte|lt]`,
paged by `limit` and `starting_after`, the charge itself inlined under `expand[]=data.source`
(shapes from Stripe's API reference). Every request's query and Authorization are recorded."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from tests.standins.serving import serve


def charge(
    payment_intent: str,
    amount: int,
    currency: str,
    created: datetime,
    *,
    refunded: bool = False,
    disputed: bool = False,
) -> dict[str, Any]:
    """A succeeded charge of `payment_intent`, as `GET /v1/charges/{id}` shows it."""
    return {
        "id": "ch_" + payment_intent.removeprefix("pi_"),
        "object": "charge",
        "amount": amount,
        "amount_refunded": amount if refunded else 0,
        "currency": currency,
        "created": int(created.timestamp()),
        "payment_intent": payment_intent,
        "invoice": None,
        "refunded": refunded,
        "disputed": disputed,
        "status": "succeeded",
        "paid": True,
        "livemode": False,
    }


def _transaction(source: dict[str, Any], expand: bool) -> dict[str, Any]:
    return {
        "id": "txn_" + source["id"].removeprefix("ch_"),
        "object": "balance_transaction",
        "amount": source["amount"],
        "currency": source["currency"],
        "created": source["created"],
        "available_on": source["created"] + 7 * 86400,
        "fee": 0,
        "net": source["amount"],
        "reporting_category": "charge",
        "status": "available",
        "type": "charge",
        "source": source if expand else source["id"],
    }


class StripeBalanceApi:
    def __init__(self, charges: list[dict[str, Any]]) -> None:
        self.charges = sorted(charges, key=lambda c: (c["created"], c["id"]), reverse=True)
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None

    async def _list(self, request: web.Request) -> web.Response:
        query = request.rel_url.query
        recorded: dict[str, Any] = {
            key: value for key, value in query.items() if not key.startswith("expand[")
        }
        recorded["expand[]"] = [v for k, v in query.items() if k.startswith("expand[")]
        recorded["authorization"] = request.headers.get("Authorization")
        self.requests.append(recorded)
        found = [
            c
            for c in self.charges
            if ("created[gte]" not in query or c["created"] >= int(query["created[gte]"]))
            and ("created[lt]" not in query or c["created"] < int(query["created[lt]"]))
        ]
        after = query.get("starting_after")
        if after is not None:
            ids = [_transaction(c, False)["id"] for c in found]
            found = found[ids.index(after) + 1 :]
        limit = int(query.get("limit", "10"))
        expand = "data.source" in recorded["expand[]"]
        return web.json_response(
            {
                "object": "list",
                "url": "/v1/balance_transactions",
                "has_more": len(found) > limit,
                "data": [_transaction(c, expand) for c in found[:limit]],
            }
        )

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/v1/balance_transactions", self._list)
        self._runner, url = await serve(app)
        return url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
