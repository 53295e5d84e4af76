"""A local stand-in for the parts of Stripe's API that thin events send colmena to.

It serves objects by their API path (`GET /v1/payment_intents/{id}`, `/v1/disputes/{id}`,
`/v1/charges/{id}`, `/v1/checkout/sessions/{id}`: whatever a thin event's
`related_object.url` names) in the API's JSON shape, checks the Bearer secret key like the real
API, and answers errors in Stripe's `{"error": {"type", "code", "message"}}` envelope: 404
`resource_missing` for an unknown object, 401 for a wrong key, 500 `api_error` while
`fail_next` counts down.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.standins.serving import serve

# The API path of each object type a thin event's related_object may name.
API_PATHS = {
    "payment_intent": "/v1/payment_intents",
    "charge": "/v1/charges",
    "dispute": "/v1/disputes",
    "checkout.session": "/v1/checkout/sessions",
    "invoice": "/v1/invoices",
    "subscription": "/v1/subscriptions",
}


def _error(status: int, kind: str, code: str | None, message: str) -> web.Response:
    return web.json_response(
        {"error": {"type": kind, "code": code, "message": message}}, status=status
    )


class StripeEventsStandin:
    def __init__(self, secret_key: str) -> None:
        self.secret_key = secret_key
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []
        self.fail_next = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    def put(self, obj: dict[str, Any]) -> str:
        """Serve `obj` at its API path; returns that path (a related_object's `url`)."""
        path = f"{API_PATHS[obj['object']]}/{obj['id']}"
        self.objects[path] = obj
        return path

    async def _get(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        if request.headers.get("Authorization") != f"Bearer {self.secret_key}":
            return _error(401, "invalid_request_error", None, "Invalid API Key provided")
        if self.fail_next > 0:
            self.fail_next -= 1
            return _error(500, "api_error", None, "An unknown error occurred")
        found = self.objects.get(request.path)
        if found is None:
            return _error(
                404, "invalid_request_error", "resource_missing", f"No such object: {request.path}"
            )
        return web.json_response(found)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/{path:v1/.+}", self._get)
        self._runner, self.url = await serve(app)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
