"""A local stand-in for Stripe's Billing API: customers, subscription Checkout Sessions, prices,
subscription retrieve and update (with the customer.subscription.updated it sends), customer portal
configurations and sessions, and the "pay" that turns a session into a subscription with its
webhooks. `ledger.clock_offset` advances Stripe's clock for the events, as a test clock does.

It serves colmena's own Stripe Billing sandbox (colmena.sandbox.stripe_billing, built from the API
reference's objects and Stripe's form encoding) on a port of its own, and adds what tests need on
top: every API request as it arrived (path, decoded form, Idempotency-Key) and a switch that makes
Stripe fail the way an outage looks to a client (500 with an `api_error` body).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from colmena.sandbox.stripe_billing import LEDGER, Ledger, WebhookTarget, nested, stripe_billing_app
from tests.standins.serving import serve


@dataclass(frozen=True)
class SeenRequest:
    path: str
    params: dict[str, Any]
    idempotency_key: str | None


class StripeBillingStandin:
    def __init__(self, target: WebhookTarget | None = None) -> None:
        self.requests: list[SeenRequest] = []
        self.failing = False
        self.target = target  # where a paid session's events go (set its url later)
        self._runner: web.AppRunner | None = None
        self._app: web.Application | None = None
        self.url = ""

    @property
    def ledger(self) -> Ledger:
        assert self._app is not None, "start() the stand-in first"
        return self._app[LEDGER]

    def api_requests(self, path: str) -> list[SeenRequest]:
        return [seen for seen in self.requests if seen.path == path]

    @web.middleware
    async def _watch(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/v1/"):
            form = await request.post()
            params = nested((key, str(value)) for key, value in form.items())
            self.requests.append(
                SeenRequest(request.path, params, request.headers.get("Idempotency-Key"))
            )
            if self.failing:
                body = {"error": {"type": "api_error", "message": "An unknown error occurred"}}
                return web.json_response(body, status=500)
        return await handler(request)

    async def start(self) -> str:
        self._app = stripe_billing_app(target=self.target)
        self._app.middlewares.insert(0, self._watch)  # outermost: sees every request first
        self._runner, self.url = await serve(self._app)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
