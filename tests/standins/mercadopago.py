"""A local stand-in for Mercado Pago's payments API, answering in its real response shape.

Shapes follow `GET /v1/payments/{id}` and `GET /v1/payments/search` of the public API reference
(trimmed to the fields a payment integration reads): ids are integers, amounts decimals, dates
ISO-8601 with the seller's offset (-04:00), `paging` + `results` for searches, and error bodies
`{"message", "error", "status", "cause": []}`. It checks the Bearer token like the real API.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from aiohttp import web

from tests.standins.serving import serve

SELLER_TZ = timezone(timedelta(hours=-4))
_ids = itertools.count(1_319_000_000)


def mp_time(moment: datetime) -> str:
    return moment.astimezone(SELLER_TZ).isoformat(timespec="milliseconds")


def payment_object(
    *,
    payment_id: int | None = None,
    status: str = "approved",
    amount: Decimal = Decimal("1500.00"),
    currency: str = "MXN",
    email: str = "comprador@example.com",
    metadata: dict[str, Any] | None = None,
    external_reference: str | None = None,
    updated: datetime | None = None,
) -> dict[str, Any]:
    now = updated or datetime.now(SELLER_TZ)
    created = now - timedelta(minutes=5)
    detail = {
        "approved": "accredited",
        "pending": "pending_waiting_transfer",
        "rejected": "cc_rejected_other_reason",
        "refunded": "refunded",
        "charged_back": "settled",
        "in_process": "pending_contingency",
    }.get(status, status)
    return {
        "id": payment_id or next(_ids),
        "date_created": mp_time(created),
        "date_approved": mp_time(now) if status == "approved" else None,
        "date_last_updated": mp_time(now),
        "money_release_date": mp_time(now + timedelta(days=14)) if status == "approved" else None,
        "operation_type": "regular_payment",
        "issuer_id": "160",
        "payment_method_id": "visa",
        "payment_type_id": "credit_card",
        "status": status,
        "status_detail": detail,
        "currency_id": currency,
        "description": "Colmena Enterprise",
        "live_mode": False,
        "collector_id": 1_234_567_890,
        "payer": {
            "id": "987654321",
            "email": email,
            "type": None,
            "identification": {"type": "RFC", "number": None},
            "first_name": None,
            "last_name": None,
        },
        "metadata": metadata or {},
        "additional_info": {
            "items": [
                {
                    "id": "colmena-enterprise",
                    "title": "Colmena Enterprise",
                    "quantity": "1",
                    "unit_price": str(amount),
                }
            ]
        },
        "external_reference": external_reference,
        "transaction_amount": float(amount),
        "transaction_amount_refunded": float(amount) if status == "refunded" else 0,
        "coupon_amount": 0,
        "transaction_details": {
            "net_received_amount": float(amount * Decimal("0.96")),
            "total_paid_amount": float(amount),
            "overpaid_amount": 0,
            "installment_amount": float(amount),
            "financial_institution": None,
        },
        "fee_details": [
            {
                "type": "mercadopago_fee",
                "amount": float(amount * Decimal("0.04")),
                "fee_payer": "collector",
            }
        ],
        "captured": True,
        "binary_mode": False,
        "installments": 1,
        "refunds": [],
    }


def _error(status: int, message: str, error: str) -> web.Response:
    return web.json_response(
        {"message": message, "error": error, "status": status, "cause": []}, status=status
    )


class MercadoPagoStandin:
    def __init__(self, token: str) -> None:
        self.token = token
        self.payments: dict[str, dict[str, Any]] = {}
        self.fail_next = 0
        self.requests: list[str] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    def put(self, payment: dict[str, Any]) -> dict[str, Any]:
        self.payments[str(payment["id"])] = payment
        return payment

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    async def _get(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        if not self._authorized(request):
            return _error(401, "invalid access token", "unauthorized")
        if self.fail_next > 0:
            self.fail_next -= 1
            return _error(500, "Internal server error", "internal_error")
        payment = self.payments.get(request.match_info["payment_id"])
        if payment is None:
            return _error(404, "Payment not found", "not_found")
        return web.json_response(payment)

    async def _search(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        if not self._authorized(request):
            return _error(401, "invalid access token", "unauthorized")
        begin = datetime.fromisoformat(
            request.query.get("begin_date", "1970-01-01T00:00:00Z").replace("Z", "+00:00")
        )
        offset, limit = int(request.query.get("offset", 0)), int(request.query.get("limit", 30))
        matching = [
            p
            for p in self.payments.values()
            if datetime.fromisoformat(p["date_last_updated"]) >= begin
        ]
        page = matching[offset : offset + limit]
        return web.json_response(
            {"paging": {"total": len(matching), "limit": limit, "offset": offset}, "results": page}
        )

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/v1/payments/search", self._search)
        app.router.add_get("/v1/payments/{payment_id}", self._get)
        self._runner, self.url = await serve(app)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
