"""Bitso sandbox: Pay with Bitso payment intents, served by `colmena dev` under /sandbox/bitso.

- `POST /payments/v1alpha/payment_intents`: signed as Bitso's API wants (`Authorization: Bitso
  <key>:<nonce>:<signature>`, HMAC-SHA256 of nonce + method + path + body, a nonce that grows),
  a body of `amount` (decimal string), `asset`, `type` pay_with_bitso, `external_ref` and
  `pay_with_bitso` {success_redirect_url, error_redirect_url, duration}. The answer is Bitso's
  envelope `{"success": true, "payload": <intent>}`, the intent in the shape of Bitso's
  payment_intent payloads (status CREATED, `pay_with_bitso.universal_link`); refusals are
  `{"success": false, "error": {"code", "message"}}`. A repeated Idempotency-Key replays.
- `GET /pay-with-bitso/{id}`: where the universal link points. `POST /pay-with-bitso/{id}/pay`
  completes the intent and posts the signed `payment_intent` event (COMPLETED) to the ingress's
  /webhooks/bitso, signed with the `colmena dev` webhook key; the browser goes to the success
  URL.
"""

from __future__ import annotations

import hmac
import html
import json
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from colmena.config import Settings
from colmena.gateways import bitso, bitso_webhooks
from colmena.gateways.sample_events import bitso_payment_intent
from colmena.http.context import SETTINGS

SANDBOX_API_KEY = "sandbox-colmena-dev"
SANDBOX_API_SECRET = "sandbox-colmena-dev-secret"  # a sandbox's, printed nowhere that matters
ASSETS = ("MXN",)
PAY_PATH = "/pay-with-bitso"


class BitsoRefusal(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass
class Account:
    """The sandbox merchant: its API credentials, intents, replies and the last nonce seen."""

    api_key: str = SANDBOX_API_KEY
    api_secret: str = SANDBOX_API_SECRET
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    replies: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    last_nonce: int = 0
    # Signs deliveries; unset: the `colmena dev` key under the ingress's COLMENA_DATA_DIR.
    signing_key: rsa.RSAPrivateKey | None = None
    # Where deliveries go; unset: the ingress this sandbox is mounted on.
    webhook_url: str | None = None


ACCOUNT = web.AppKey("bitso_sandbox_account", Account)


def _authenticate(account: Account, request: web.Request, body: str) -> None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    key, nonce, signature = (credentials.split(":") + ["", "", ""])[:3]
    expected = bitso.signature(
        account.api_secret, int(nonce) if nonce.isdigit() else 0, request.method, request.path, body
    )
    if (
        scheme != "Bitso"
        or key != account.api_key
        or not nonce.isdigit()
        or int(nonce) <= account.last_nonce
        or not hmac.compare_digest(signature, expected)
    ):
        raise BitsoRefusal(401, "0201", "Invalid Nonce or Invalid Credentials")
    account.last_nonce = int(nonce)


def _intent(body: Any, base: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BitsoRefusal(400, "0301", "the body must be a JSON object")
    try:
        amount = Decimal(str(body.get("amount")))
    except InvalidOperation:
        raise BitsoRefusal(400, "0301", "amount must be a decimal string") from None
    if not isinstance(body.get("amount"), str) or not amount.is_finite() or amount <= 0:
        raise BitsoRefusal(400, "0301", "amount must be a positive decimal string")
    if body.get("asset") not in ASSETS:
        raise BitsoRefusal(400, "0301", f"asset must be one of {', '.join(ASSETS)}")
    if body.get("type") != "pay_with_bitso":
        raise BitsoRefusal(400, "0301", "type must be pay_with_bitso")
    details = body.get("pay_with_bitso")
    if not isinstance(details, dict) or not all(
        isinstance(details.get(name), str)
        for name in ("success_redirect_url", "error_redirect_url")
    ):
        raise BitsoRefusal(400, "0301", "pay_with_bitso needs success and error redirect URLs")
    reference = body.get("external_ref")
    if reference is not None and (not isinstance(reference, str) or len(reference) > 255):
        raise BitsoRefusal(400, "0301", "external_ref: a string of at most 255 characters")
    intent = bitso_payment_intent(
        intent_id=str(uuid.uuid4()),
        status="CREATED",
        amount=float(amount),
        asset=str(body["asset"]),
        external_ref=reference,
    )["payload"]
    intent["pay_with_bitso"] = {
        "success_redirect_url": details["success_redirect_url"],
        "error_redirect_url": details["error_redirect_url"],
        "duration": str(details.get("duration") or "PT1H"),
        "universal_link": f"{base}{PAY_PATH}/{intent['id']}",
    }
    return intent


def _refusal(exc: BitsoRefusal) -> web.Response:
    body = {"success": False, "error": {"code": exc.code, "message": str(exc)}}
    return web.json_response(body, status=exc.status)


async def create_intent(request: web.Request) -> web.Response:
    account = request.app[ACCOUNT]
    text = await request.text()
    try:
        _authenticate(account, request, text)
        key = request.headers.get(bitso.IDEMPOTENCY_HEADER)
        if key is not None and key in account.replies:
            seen, reply = account.replies[key]
            if seen != text:
                raise BitsoRefusal(409, "0409", "Idempotency-Key reused with another body")
            return web.json_response({"success": True, "payload": reply})
        try:
            body = json.loads(text)
        except ValueError:
            raise BitsoRefusal(400, "0301", "the body is not JSON") from None
        base = str(request.url.origin()) + request.path.removesuffix(bitso.INTENTS_PATH)
        intent = _intent(body, base)
    except BitsoRefusal as exc:
        return _refusal(exc)
    account.intents[intent["id"]] = intent
    if key is not None:
        account.replies[key] = (text, intent)
    return web.json_response({"success": True, "payload": intent})


def _found(request: web.Request) -> dict[str, Any]:
    intent = request.app[ACCOUNT].intents.get(request.match_info["intent_id"])
    if intent is None:
        raise web.HTTPNotFound(text="no such payment intent")
    return intent


async def pay_page(request: web.Request) -> web.Response:
    intent = _found(request)
    action = html.escape(f"{request.path}/pay")
    return web.Response(
        text='<!doctype html><html><head><meta charset="utf-8"><title>Pay with Bitso sandbox'
        "</title></head><body><p><strong>SANDBOX</strong>: no real payment.</p>"
        f"<p>{intent['amount']} {html.escape(intent['asset'])}</p>"
        f'<form method="post" action="{action}"><button type="submit">Pay (sandbox)</button>'
        "</form></body></html>",
        content_type="text/html",
    )


async def pay(request: web.Request) -> web.Response:
    """Complete the intent and deliver the signed COMPLETED event, as Bitso does."""
    intent = _found(request)
    if intent["status"] != "CREATED":
        raise web.HTTPConflict(text="this payment intent is not payable")
    account = request.app[ACCOUNT]
    completed = bitso_payment_intent(
        intent_id=intent["id"],
        status="COMPLETED",
        amount=intent["amount"],
        asset=intent["asset"],
        external_ref=intent["external_ref"],
        updated=time.time(),
    )["payload"]
    intent.update(status="COMPLETED", updated_at=completed["updated_at"])
    intent["pay_with_bitso"]["universal_link_visited_at"] = completed["updated_at"]
    settings = request.config_dict.get(SETTINGS)
    key = account.signing_key
    if key is None and settings is not None:
        key = bitso_webhooks.dev_signing_key(settings.data_dir)
    if key is None:
        raise web.HTTPServiceUnavailable(text="no key to sign Bitso deliveries with")
    url = account.webhook_url or str(request.url.origin()) + "/webhooks/bitso"
    headers = {
        "Content-Type": "application/json",
        bitso_webhooks.SIGNATURE_HEADER: bitso_webhooks.sign(intent, key),
        bitso_webhooks.KEY_ID_HEADER: bitso_webhooks.DEV_KEY_ID,
    }
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client,
        client.post(
            url, data=json.dumps({"event": "payment_intent", "payload": intent}), headers=headers
        ) as response,
    ):
        if response.status >= 300:
            raise web.HTTPBadGateway(text=f"webhook answered {response.status}")
    raise web.HTTPSeeOther(intent["pay_with_bitso"]["success_redirect_url"])


def bitso_app(account: Account | None = None) -> web.Application:
    app = web.Application()
    app[ACCOUNT] = account or Account()
    app.router.add_post(bitso.INTENTS_PATH, create_intent)
    app.router.add_get(f"{PAY_PATH}/{{intent_id}}", pay_page)
    app.router.add_post(f"{PAY_PATH}/{{intent_id}}/pay", pay)
    return app


def with_bitso_sandbox(settings: Settings, url: str | None) -> Settings:
    """`settings` with payment intents sent to the sandbox at `url` (none: unchanged)."""
    if url is None:
        return settings
    return settings.model_copy(
        update={
            "bitso_api_url": url,
            "bitso_api_key": SecretStr(SANDBOX_API_KEY),
            "bitso_api_secret": SecretStr(SANDBOX_API_SECRET),
        }
    )
