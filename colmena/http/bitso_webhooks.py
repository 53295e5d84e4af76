"""POST /webhooks/bitso: a Bitso delivery verified, then committed to the inbox, then answered.

The same path as Stripe's and Mercado Pago's (http/webhooks.py, whose refusal and storing steps
this reuses): verify before anything (gateways/bitso_webhooks, Bitso's RSA scheme); a failed
check is a 401, a counter and a security log line, nothing stored; the inbox row and its outbox
message are committed in one statement before the 2xx; PostgreSQL down is a 503, which Bitso
retries (it retries only 5xx, timeouts and network errors). The dedupe key is the resource id
and status inside the signed payload.
"""

from __future__ import annotations

from aiohttp import web

from colmena.config.metrics import WEBHOOKS
from colmena.gateways import bitso_webhooks as bitso
from colmena.http.context import SETTINGS
from colmena.http.errors import ApiError
from colmena.http.middlewares import record_failed_auth
from colmena.http.webhooks import json_text, reject_webhook, store_event, webhook_body

PROVIDER = "bitso"


async def bitso_webhook(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    keys = settings.bitso_public_keys()
    if not keys:
        WEBHOOKS.labels(provider=PROVIDER, outcome="not_configured").inc()
        raise ApiError(503, "not_configured", "Bitso webhooks are not configured")
    body = await webhook_body(request, PROVIDER)
    try:
        event = bitso.verify_delivery(
            body,
            signature=request.headers.get(bitso.SIGNATURE_HEADER),
            key_id=request.headers.get(bitso.KEY_ID_HEADER),
            public_keys=keys,
            max_age_s=settings.bitso_max_event_age_s,
            max_skew_s=settings.bitso_clock_skew_s,
        )
    except bitso.BitsoSignatureError as exc:
        await record_failed_auth(request)
        raise reject_webhook(
            request, PROVIDER, 401, "invalid_signature", "signature verification failed", exc.reason
        ) from None
    except bitso.BitsoEventError as exc:
        raise reject_webhook(request, PROVIDER, 400, "malformed", str(exc), str(exc)) from None
    return await store_event(
        request,
        provider=PROVIDER,
        event_key=event.key,
        kind=event.kind,
        document=json_text(body, event.body),
        actor="settle_bitso_event",
    )


def setup(app: web.Application) -> None:
    app.router.add_post("/webhooks/bitso", bitso_webhook)
