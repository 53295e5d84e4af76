"""POST /api/v1/checkout: a validated order, stored, then sent to its payment provider.

The order is committed `pending_provider` before any provider is called, so nothing a provider
does (or fails to do) loses it. Then the provider makes its session (Stripe Checkout Session,
Mercado Pago preference, Bitso payment intent, each given the order id as its only metadata) and
the order turns `open` with the provider's reference and the buyer's redirect URL: 201
{order_id, provider, redirect_url, status}.

Idempotency-Key (header, optional): the same key and the same body answer the same order (200),
calling the provider again only while the order is still `pending_provider` (a retry after a
503); the same key with another body is 409. The key is Stripe's idempotency key too, so a
retried Stripe checkout gets the very same session. A provider that cannot be reached or
answers 5xx gives 503 `provider_unavailable` with the order id; one that refuses the request
gives 502 `provider_refused`. Bad input is a 4xx that stores nothing and calls no provider.

Two requests racing with one key may both reach the provider (Stripe answers both with one
session; Mercado Pago makes a second, unused preference): the first session recorded is the one
both answers name.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

import asyncpg
import structlog
from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError

from colmena.config import Settings
from colmena.domain.checkout import (
    MAX_QUANTITY,
    CheckoutError,
    CheckoutRequest,
    Fiscal,
    draft_order,
)
from colmena.gateways import bitso, mercadopago_checkout, stripe_checkout
from colmena.gateways.checkout_session import (
    CheckoutRefused,
    CheckoutUnavailable,
    ProviderSession,
    SessionRequest,
)
from colmena.http import checkout_pages
from colmena.http.context import RESOURCES, SETTINGS
from colmena.http.errors import ApiError
from colmena.http.payloads import field_errors, json_body
from colmena.http.webhooks import DATABASE_DOWN
from colmena.store import catalog, orders
from colmena.store.orders import Order

log = structlog.get_logger(__name__)

ROUTE = "/api/v1/checkout"
MAX_SEATS = 100_000
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def _json_integer(value: Any) -> Any:
    """JSON's integers as JSON Schema counts them: 2 and 2.0, never true or "2"."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(_json_integer), Field(strict=True)]


class FiscalBody(BaseModel):
    """What a CFDI names its receiver by; the SAT's rules are checked past the catalog."""

    model_config = ConfigDict(extra="forbid")

    rfc: Annotated[str, Field(min_length=12, max_length=13)]
    name: Annotated[str, Field(min_length=1, max_length=300)]
    regime: Annotated[str, Field(pattern=r"^[0-9]{3}$")]
    postal_code: Annotated[str, Field(pattern=r"^[0-9]{5}$")]
    cfdi_use: Annotated[str, Field(min_length=3, max_length=4)]


class CheckoutBody(BaseModel):
    """The request body's shapes, exactly as openapi.json states them (so a body the document
    allows is never refused here); the catalog and provider rules come after, in
    `colmena.domain.checkout`."""

    model_config = ConfigDict(extra="forbid")

    product: Annotated[str, Field(min_length=1, max_length=63)]
    edition: Annotated[str | None, Field(min_length=1, max_length=63)] = None
    seats: Annotated[JsonInt, Field(ge=1, le=MAX_SEATS)] = 1
    quantity: Annotated[JsonInt, Field(ge=1, le=MAX_QUANTITY)] = 1
    currency: Annotated[str, Field(pattern=r"^[A-Za-z]{3}$")]
    email: Annotated[str, Field(min_length=1, max_length=254)]
    provider: Literal["stripe", "mercadopago", "bitso"]
    installments: Annotated[JsonInt | None, Field(ge=1, le=48)] = None
    fiscal: FiscalBody | None = None
    locale: Literal["es", "en"] | None = None

    def request(self) -> CheckoutRequest:
        fiscal = self.fiscal
        return CheckoutRequest(
            product=self.product,
            edition=self.edition,
            seats=self.seats,
            quantity=self.quantity,
            currency=self.currency.upper(),
            email=self.email,
            provider=self.provider,
            installments=self.installments,
            fiscal=Fiscal(**fiscal.model_dump()) if fiscal else None,
            locale=self.locale,
        )

    def digest(self) -> bytes:
        """What "the same body" means: the validated fields, not their spelling."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).digest()


def _parse(payload: Any) -> CheckoutBody:
    try:
        return CheckoutBody.model_validate(payload)
    except ValidationError as exc:
        errors = [
            (".".join(str(part) for part in error["loc"]) or "body", error["msg"])
            for error in exc.errors()
        ]
        raise field_errors(errors, "the checkout request is not valid") from None


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise ApiError(
            400, "invalid_idempotency_key", "Idempotency-Key: 1 to 255 printable ASCII characters"
        )
    return key


def _secret(value: SecretStr | None, provider: str) -> str:
    if value is None:
        raise ApiError(
            422,
            "provider_not_available",
            f"{provider} checkout is not offered here",
            field="provider",
        )
    return value.get_secret_value()


def _configured(settings: Settings, provider: str) -> None:
    """A provider colmena has no credentials for is refused before an order is made: the
    buyer chose a provider this deployment does not offer."""
    credentials = {
        "stripe": (settings.stripe_secret_key,),
        "mercadopago": (settings.mercadopago_access_token,),
        "bitso": (settings.bitso_api_key, settings.bitso_api_secret),
    }[provider]
    for value in credentials:
        _secret(value, provider)


def _answer(order: Order, status: int) -> web.Response:
    body = {
        "order_id": str(order.id),
        "provider": order.provider,
        "redirect_url": order.redirect_url,
        "status": order.status,
    }
    return web.json_response(body, status=status)


def session_request(settings: Settings, order: Order, title: str) -> SessionRequest:
    """What the provider is told: the order's own values and colmena's pages."""
    base = settings.checkout_links_base
    page = f"?order={order.id}"
    return SessionRequest(
        order_id=str(order.id),
        title=title,
        amount=order.amount,
        currency=order.currency,
        buyer_email=order.buyer_email,
        installments=order.installments,
        success_url=f"{base}{checkout_pages.SUCCESS}{page}",
        cancel_url=f"{base}{checkout_pages.CANCEL}{page}",
        pending_url=f"{base}{checkout_pages.PENDING}{page}",
        notification_url=f"{base}/webhooks/mercadopago",
        idempotency_key=order.idempotency_key or f"order-{order.id}",
    )


async def _provider_session(settings: Settings, order: Order, title: str) -> ProviderSession:
    request = session_request(settings, order, title)
    timeout = settings.checkout_timeout_s
    if order.provider == "stripe":
        return await stripe_checkout.create_session(
            request,
            secret_key=_secret(settings.stripe_secret_key, order.provider),
            api_url=settings.stripe_api_url,
            timeout_s=timeout,
        )
    if order.provider == "mercadopago":
        return await mercadopago_checkout.create_preference(
            request,
            product_ref=order.product_ref,
            access_token=_secret(settings.mercadopago_access_token, order.provider),
            api_url=settings.mercadopago_api_url,
            timeout_s=timeout,
        )
    return await bitso.create_intent(
        request,
        api_key=_secret(settings.bitso_api_key, order.provider),
        api_secret=_secret(settings.bitso_api_secret, order.provider),
        api_url=settings.bitso_api_url,
        duration=settings.bitso_intent_duration,
        timeout_s=timeout,
    )


async def _store_order(
    settings: Settings, pool: asyncpg.Pool, body: CheckoutBody, key: str | None
) -> tuple[Order, bool, str]:
    """Validate against the catalog and store the order; (order, created, product name)."""
    checkout = body.request()
    async with pool.acquire() as conn, conn.transaction():
        product = await catalog.get_product(conn, checkout.product)
        live = (
            await catalog.live_price(conn, checkout.product, checkout.edition, checkout.currency)
            if product is not None
            else None
        )
        try:
            draft = draft_order(checkout, product, live.price if live else None)
        except CheckoutError as exc:
            extra: dict[str, Any] = {"field": exc.field} if exc.field else {}
            raise ApiError(exc.status, exc.code, str(exc), **extra) from None
        _configured(settings, draft.provider)
        order, created = await orders.create(
            conn, draft, idempotency_key=key, request_sha256=body.digest()
        )
    return order, created, product.name if product else checkout.product


async def create_checkout(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    pool = request.app[RESOURCES].pool
    key = _idempotency_key(request)
    body = _parse(await json_body(request))
    try:
        order, created, name = await _store_order(settings, pool, body, key)
    except DATABASE_DOWN as exc:
        log.warning("checkout: database unavailable", error=type(exc).__name__)
        raise ApiError(503, "database_unavailable", "try again shortly") from None
    if not created:
        if order.request_sha256 != body.digest():
            raise ApiError(
                409,
                "idempotency_conflict",
                "this Idempotency-Key was used with another request body",
                order_id=str(order.id),
            )
        if order.status != "pending_provider":
            return _answer(order, 200)
    try:
        session = await _provider_session(settings, order, name)
    except CheckoutUnavailable as exc:
        log.warning("checkout: provider unavailable", order_id=str(order.id), reason=str(exc))
        raise ApiError(
            503,
            "provider_unavailable",
            f"{order.provider} is unavailable; retry with the same Idempotency-Key",
            order_id=str(order.id),
            headers={"Retry-After": "5"},
        ) from None
    except CheckoutRefused as exc:
        log.error("checkout: provider refused", order_id=str(order.id), reason=str(exc))
        raise ApiError(
            502,
            "provider_refused",
            f"{order.provider} refused the checkout",
            order_id=str(order.id),
        ) from None
    async with pool.acquire() as conn:
        order = await orders.mark_open(
            conn, order.id, provider_ref=session.provider_ref, redirect_url=session.redirect_url
        )
    log.info(
        "checkout: order open",
        order_id=str(order.id),
        provider=order.provider,
        amount=str(order.amount),
        currency=order.currency,
    )
    return _answer(order, 201)


def setup(app: web.Application) -> None:
    app.router.add_post(ROUTE, create_checkout)
    checkout_pages.setup(app)
