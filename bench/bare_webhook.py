"""The baseline for bench/webhooks.py: an aiohttp handler that only verifies and parses.

python bench/bare_webhook.py PORT SECRET
"""

from __future__ import annotations

import json
import sys

import stripe
from aiohttp import web


def main() -> None:
    port, secret = int(sys.argv[1]), sys.argv[2]

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        stripe.WebhookSignature.verify_header(
            body.decode(), request.headers["Stripe-Signature"], secret, 300
        )
        json.loads(body)
        return web.json_response({"received": True})

    app = web.Application()
    app.router.add_post("/webhooks/stripe", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
