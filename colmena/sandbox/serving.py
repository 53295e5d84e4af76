"""Which sandboxes a `colmena dev` process serves, its settings pointed at them, their mounts.

A provider gets its sandbox when colmena is not configured for it: Mercado Pago without
COLMENA_MERCADOPAGO_ACCESS_TOKEN (the API URL is moved to the sandbox and a sandbox test token
used), BCV without COLMENA_BCV_URL, Binance without COLMENA_BINANCE_P2P_URL, the PAC without any
stamping setting (colmena.sandbox.stamping: the PAC sandbox and a locally minted test CSD),
Stripe subscriptions and one-off Checkout Sessions without COLMENA_STRIPE_SECRET_KEY
(colmena.sandbox.stripe_billing, colmena.sandbox.stripe_checkout), Pay with Bitso without
COLMENA_BITSO_API_KEY (colmena.sandbox.bitso).
Configured providers are left alone and get no sandbox. `colmena dev` writes the sandboxes' base
URLs in its stack file, so operator commands of a second terminal use the same ones (and
`colmena check` counts what a sandbox stands in for as ready).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aiohttp import web
from pydantic import SecretStr

from colmena.config import Settings
from colmena.gateways import rate_sources
from colmena.gateways.mercadopago import SANDBOX_ACCESS_TOKEN
from colmena.sandbox.bitso import bitso_app, with_bitso_sandbox
from colmena.sandbox.mercadopago import mercadopago_app
from colmena.sandbox.pac import pac_app
from colmena.sandbox.rates import bcv_app, binance_app
from colmena.sandbox.stamping import stamping_configured, with_pac_sandbox
from colmena.sandbox.stripe_billing import stripe_billing_app, with_billing_sandbox
from colmena.sandbox.stripe_checkout import stripe_checkout_app, with_checkout_sandbox

PREFIX = "/sandbox"
APPS: dict[str, Callable[[], web.Application]] = {
    "mercadopago": mercadopago_app,
    "bcv": bcv_app,
    "binance": binance_app,
    "pac": pac_app,
    "stripe-billing": stripe_billing_app,
    "stripe": stripe_checkout_app,
    "bitso": bitso_app,
}
# What each sandbox answers, and the command that uses it, for the dev banner.
DESCRIPTIONS = {
    "mercadopago": ("payments API, test cards", "colmena trigger mercadopago approved"),
    "bcv": ("recorded BCV home page", "colmena rates scrape bcv"),
    "binance": ("recorded P2P adverts", "colmena rates scrape binance"),
    "pac": ("SW stamping API, test CSD minted locally", "colmena invoices list"),
    "stripe-billing": ("plan subscriptions: checkout, portal", "POST /api/v1/billing/checkout"),
    "stripe": ("one-off Checkout Sessions, a page that pays", "POST /api/v1/checkout"),
    "bitso": ("Pay with Bitso payment intents, a page that pays", "POST /api/v1/checkout"),
}


def dev_sandboxes(settings: Settings) -> dict[str, str]:
    """The base URL of each sandbox this dev process serves, by provider."""
    base = f"http://{settings.http_host}:{settings.http_port}{PREFIX}"
    wanted = {
        "mercadopago": settings.mercadopago_access_token is None,
        "bcv": "bcv_url" not in settings.model_fields_set,
        "binance": "binance_p2p_url" not in settings.model_fields_set,
        "pac": not stamping_configured(settings),
        "stripe-billing": settings.stripe_secret_key is None,
        "stripe": settings.stripe_secret_key is None,
        "bitso": settings.bitso_api_key is None,
    }
    return {provider: f"{base}/{provider}" for provider, serve in wanted.items() if serve}


def with_sandboxes(settings: Settings, sandboxes: Mapping[str, str]) -> Settings:
    """`settings` with each provider in `sandboxes` pointed at its sandbox (the PAC's mints the
    sandbox CSD under COLMENA_DATA_DIR on first use)."""
    if "mercadopago" in sandboxes:
        settings = settings.model_copy(
            update={
                "mercadopago_api_url": sandboxes["mercadopago"],
                "mercadopago_access_token": SecretStr(SANDBOX_ACCESS_TOKEN),
            }
        )
    if "pac" in sandboxes:
        settings = with_pac_sandbox(settings, sandboxes["pac"])
    settings = with_checkout_sandbox(settings, sandboxes.get("stripe"))
    settings = with_bitso_sandbox(settings, sandboxes.get("bitso"))
    settings = with_billing_sandbox(settings, sandboxes.get("stripe-billing"))
    return rate_sources.with_sandboxes(settings, sandboxes)


def mount_sandboxes(app: web.Application, sandboxes: Mapping[str, str]) -> None:
    """Mount each sandbox as the sub-app `/sandbox/<provider>` of the dev ingress."""
    for provider in sandboxes:
        app.add_subapp(f"{PREFIX}/{provider}", APPS[provider]())
