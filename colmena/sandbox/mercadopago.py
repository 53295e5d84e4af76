"""Mercado Pago sandbox: the payments API, served by `colmena dev` under /sandbox/mercadopago.

The routes colmena's gateway (colmena.gateways.mercadopago, the official SDK) calls, in the API
reference's shapes: integer ids, decimal amounts, dates with the seller's offset, `live_mode`
false on everything, and refusals as `{"message", "error", "status", "cause": [...]}`.

- `POST /v1/card_tokens`: a test card; its holder name (APRO, OTHE, CONT, ...) decides what the
  payment that spends the token becomes (colmena.sandbox.mercadopago_cards).
- `POST /v1/payments`: with a card `token` (`capture: false` leaves it authorized), or an offline
  method (`oxxo`, `paycash`) that stays pending. 201, or 200 for a repeated X-Idempotency-Key.
- `GET /v1/payments/{id}`, `GET /v1/payments/search`: what the payments actor and
  `colmena reconcile mercadopago` read.
- `PUT /v1/payments/{id}` with `{"status": "cancelled"}`, `POST /v1/payments/{id}/refunds`.
- `POST /checkout/preferences` and the buyer's page that pays one (Checkout Pro):
  colmena.sandbox.mercadopago_preferences.

Like the real API it wants a Bearer token, and only a test one ("TEST-..."): a production
credential sent here by mistake is refused, not accepted as if it meant something.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from colmena.sandbox import mercadopago_preferences
from colmena.sandbox.mercadopago_ledger import Ledger
from colmena.sandbox.mercadopago_payments import SandboxError

LEDGER = web.AppKey("mercadopago_sandbox_ledger", Ledger)
TEST_TOKEN_PREFIX = "TEST-"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A test access token first, then the API's error body for every refusal."""
    token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    buyer_page = mercadopago_preferences.BUYER_PAGES in request.path  # a browser, no token
    if not buyer_page and not token.startswith(TEST_TOKEN_PREFIX):
        refusal = SandboxError(401, "unauthorized", 401, "invalid access token")
        return web.json_response(refusal.body(), status=refusal.status)
    try:
        return await handler(request)
    except SandboxError as exc:
        return web.json_response(exc.body(), status=exc.status)


async def _body(request: web.Request) -> Any:
    text = await request.text()
    if not text.strip():
        return None
    try:
        return json.loads(text, parse_float=Decimal)
    except ValueError:
        raise SandboxError(400, "bad_request", 1, "the body is not JSON") from None


async def create_card_token(request: web.Request) -> web.Response:
    token = request.app[LEDGER].create_card_token(await _body(request))
    return web.json_response(token, status=201)


async def create_payment(request: web.Request) -> web.Response:
    key = request.headers.get("X-Idempotency-Key")
    payment, new = request.app[LEDGER].create_payment(await _body(request), key)
    return web.json_response(payment.wire(), status=201 if new else 200)


async def get_payment(request: web.Request) -> web.Response:
    return web.json_response(request.app[LEDGER].get(request.match_info["payment_id"]).wire())


async def update_payment(request: web.Request) -> web.Response:
    ledger = request.app[LEDGER]
    payment = ledger.cancel(request.match_info["payment_id"], await _body(request))
    return web.json_response(payment.wire())


async def refund_payment(request: web.Request) -> web.Response:
    ledger = request.app[LEDGER]
    refund = ledger.refund(request.match_info["payment_id"], await _body(request))
    return web.json_response(refund, status=201)


async def search_payments(request: web.Request) -> web.Response:
    return web.json_response(request.app[LEDGER].search(request.rel_url.query))


def mercadopago_app(*, clock: Callable[[], datetime] | None = None) -> web.Application:
    """The sub-app; `clock` (UTC datetimes) lets a test step time instead of waiting."""
    app = web.Application(middlewares=[api_errors])
    app[LEDGER] = Ledger(clock=clock)
    app.router.add_post("/v1/card_tokens", create_card_token)
    app.router.add_post("/v1/payments", create_payment)
    app.router.add_get("/v1/payments/search", search_payments)
    app.router.add_get("/v1/payments/{payment_id}", get_payment)
    app.router.add_put("/v1/payments/{payment_id}", update_payment)
    app.router.add_post("/v1/payments/{payment_id}/refunds", refund_payment)
    mercadopago_preferences.add_routes(app, app[LEDGER])
    return app
