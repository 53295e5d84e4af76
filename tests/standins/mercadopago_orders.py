"""The Mercado Pago payments stand-in, also serving `GET /merchant_orders/{id}`.

A merchant order groups the payments of one Checkout Pro purchase. Its shape follows the "Get
order" reference: integer `id`, `status` (opened, closed, expired), `external_reference`,
`preference_id`, `order_status`, `total_amount`, `paid_amount`, and `payments`, each a summary
(`id`, `transaction_amount`, `total_paid_amount`, `currency_id`, `status`, `status_detail`,
dates) that colmena does not trust: it fetches each payment by id.
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

from aiohttp import web

from tests.standins.mercadopago import MercadoPagoStandin, _error
from tests.standins.serving import serve

_order_ids = itertools.count(29_000_000_000)


def merchant_order(
    payments: list[dict[str, Any]], *, external_reference: str = "order-1"
) -> dict[str, Any]:
    """A merchant order listing `payments` (payment objects of the payments stand-in)."""
    total = sum((Decimal(str(p["transaction_amount"])) for p in payments), Decimal(0))
    paid = sum(
        (Decimal(str(p["transaction_amount"])) for p in payments if p["status"] == "approved"),
        Decimal(0),
    )
    return {
        "id": next(_order_ids),
        "status": "closed" if paid >= total and payments else "opened",
        "external_reference": external_reference,
        "preference_id": "1234567890-3f2c0d4e-preference",
        "order_status": "paid" if paid >= total and payments else "payment_required",
        "total_amount": float(total),
        "paid_amount": float(paid),
        "payments": [
            {
                "id": p["id"],
                "transaction_amount": p["transaction_amount"],
                "total_paid_amount": p["transaction_amount"],
                "shipping_cost": 0,
                "currency_id": p["currency_id"],
                "status": p["status"],
                "status_detail": p["status_detail"],
                "date_approved": p["date_approved"],
                "date_created": p["date_created"],
                "last_modified": p["date_last_updated"],
                "amount_refunded": 0,
            }
            for p in payments
        ],
    }


class MercadoPagoOrdersStandin(MercadoPagoStandin):
    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.orders: dict[str, dict[str, Any]] = {}

    def put_order(self, order: dict[str, Any]) -> dict[str, Any]:
        self.orders[str(order["id"])] = order
        return order

    async def _get_order(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        if not self._authorized(request):
            return _error(401, "invalid access token", "unauthorized")
        order = self.orders.get(request.match_info["order_id"])
        if order is None:
            return _error(404, "Merchant Order not found", "not_found")
        return web.json_response(order)

    async def start(self) -> str:
        """The payments routes plus merchant orders (the base class builds its app inline)."""
        app = web.Application()
        app.router.add_get("/v1/payments/search", self._search)
        app.router.add_get("/v1/payments/{payment_id}", self._get)
        app.router.add_get("/merchant_orders/{order_id}", self._get_order)
        self._runner, self.url = await serve(app)
        return self.url
