"""The pages a buyer comes back to from a provider: /checkout/success, /cancel and /pending.

Each takes `?order=<order id>` and shows the order's state as the database holds it, never as
the URL claims: a buyer sent to the success page of an order whose payment has not arrived yet
reads "awaiting payment". Spanish or English: `?lang=`, else the order's locale, else the
browser's Accept-Language; Spanish by default. An unknown order is a 404 page. Rendered with
aiohttp-jinja2 (autoescaped) in a sub-app of its own, so its template environment is its alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import aiohttp_jinja2
import jinja2
from aiohttp import web

from colmena.domain.money import format_money
from colmena.http.context import RESOURCES
from colmena.store import orders
from colmena.store.orders import Order

PREFIX = "/checkout"
SUCCESS = f"{PREFIX}/success"
CANCEL = f"{PREFIX}/cancel"
PENDING = f"{PREFIX}/pending"
TEMPLATE = "checkout_order.html"
LANGUAGES = ("es", "en")

STATUS_LABELS = {
    "es": {
        "pending_provider": "esperando el pago",
        "open": "esperando el pago",
        "paid": "pagado",
        "held": "en revisión",
        "failed": "pago no completado",
        "expired": "expirado",
    },
    "en": {
        "pending_provider": "awaiting payment",
        "open": "awaiting payment",
        "paid": "paid",
        "held": "under review",
        "failed": "payment not completed",
        "expired": "expired",
    },
}
_LABELS = {
    "es": {
        "status": "Estado",
        "order": "Pedido",
        "product": "Producto",
        "amount": "Importe",
        "provider": "Medio de pago",
    },
    "en": {
        "status": "Status",
        "order": "Order",
        "product": "Product",
        "amount": "Amount",
        "provider": "Paid with",
    },
}
PAGES = {
    "success": {
        "es": ("Gracias por tu compra", "Te enviaremos un correo en cuanto el pago se confirme."),
        "en": (
            "Thank you for your purchase",
            "We will email you as soon as the payment is confirmed.",
        ),
    },
    "cancel": {
        "es": ("Pago cancelado", "No se realizó ningún cargo. Puedes volver a intentarlo."),
        "en": ("Payment cancelled", "Nothing was charged. You can try again."),
    },
    "pending": {
        "es": ("Pago pendiente", "Tu pago está en proceso; te avisaremos por correo."),
        "en": ("Payment pending", "Your payment is being processed; we will email you."),
    },
    "missing": {
        "es": ("Pedido no encontrado", "No existe un pedido con ese número."),
        "en": ("Order not found", "There is no order with that number."),
    },
}


def language(request: web.Request, order: Order | None) -> str:
    asked = request.query.get("lang", "")
    if asked in LANGUAGES:
        return asked
    if order is not None and order.buyer_locale:
        spoken = order.buyer_locale[:2].lower()
        if spoken in LANGUAGES:
            return spoken
    accepted = request.headers.get("Accept-Language", "").strip().lower()
    return "en" if accepted.startswith("en") else "es"


def _order_id(request: web.Request) -> uuid.UUID | None:
    try:
        return uuid.UUID(request.query.get("order", ""))
    except ValueError:
        return None


def _render(request: web.Request, page: str, order: Order | None, status: int) -> web.Response:
    lang = language(request, order)
    title, explanation = PAGES[page][lang]
    context = {
        "lang": lang,
        "text": {"title": title, "explanation": explanation, **_LABELS[lang]},
        "order": order,
        "status_label": STATUS_LABELS[lang][order.status] if order else None,
        "amount": format_money(order.amount, order.currency) if order else None,
    }
    return aiohttp_jinja2.render_template(TEMPLATE, request, context, status=status)


def page_handler(page: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        order_id = _order_id(request)
        order = None
        if order_id is not None:
            async with request.config_dict[RESOURCES].pool.acquire() as conn:
                order = await orders.get(conn, order_id)
        if order is None:
            return _render(request, "missing", None, 404)
        return _render(request, page, order, 200)

    return handler


def setup(app: web.Application) -> None:
    pages = web.Application()
    aiohttp_jinja2.setup(
        pages,
        loader=jinja2.PackageLoader("colmena.http", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
    )
    for page in ("success", "cancel", "pending"):
        pages.router.add_get(f"/{page}", page_handler(page))
    app.add_subapp(PREFIX, pages)
