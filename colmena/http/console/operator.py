"""Operator console pages under /console/admin/: the overview, payments, dead letters,
licenses, invoices, rates, tenants and bots.

Routes are relative to the console sub-app's /console mount. The session middleware lets only
an admin session reach /console/admin/ and the CSRF middleware checks every POST, so no handler
here checks either. Each page lives in its own `operator_*` module.
"""

from __future__ import annotations

from aiohttp import web

from colmena.http.console import (
    operator_broker,
    operator_deadletters,
    operator_invoices,
    operator_licenses,
    operator_overview,
    operator_payments,
    operator_rates,
    operator_tenants,
)

ADMIN = "/admin"
_LICENSE = ADMIN + "/licenses/{license_id:[0-9a-fA-F-]{36}}"
_INVOICE = ADMIN + "/invoices/{invoice_id:[0-9]+}"
_LETTER = ADMIN + "/dead-letters/{queue}/{ident}"
_TENANT = ADMIN + "/tenants/{tenant_id}"


def register(console: web.Application) -> None:
    """Add the operator pages to the console sub-app."""
    operator_broker.setup(console)
    router = console.router
    router.add_get(ADMIN + "/", operator_overview.overview, name="admin-overview")
    router.add_get(ADMIN + "/payments", operator_payments.payments_list, name="admin-payments")
    router.add_get(
        ADMIN + "/payments/{payment_id:[0-9]+}",
        operator_payments.payment_page,
        name="admin-payment",
    )
    router.add_get(
        ADMIN + "/dead-letters", operator_deadletters.dead_letters, name="admin-dead-letters"
    )
    router.add_post(ADMIN + "/dead-letters/requeue", operator_deadletters.requeue_bulk)
    router.add_get(_LETTER, operator_deadletters.dead_letter, name="admin-dead-letter")
    router.add_post(_LETTER + "/requeue", operator_deadletters.requeue_one)
    router.add_get(ADMIN + "/licenses", operator_licenses.licenses_list, name="admin-licenses")
    router.add_get(_LICENSE, operator_licenses.license_page, name="admin-license")
    router.add_post(_LICENSE + "/resend", operator_licenses.resend)
    router.add_post(_LICENSE + "/revoke", operator_licenses.revoke)
    router.add_get(ADMIN + "/invoices", operator_invoices.invoices_list, name="admin-invoices")
    router.add_get(_INVOICE, operator_invoices.invoice_page, name="admin-invoice")
    router.add_get(_INVOICE + "/xml", operator_invoices.invoice_xml, name="admin-invoice-xml")
    router.add_get(_INVOICE + "/pdf", operator_invoices.invoice_pdf, name="admin-invoice-pdf")
    router.add_post(_INVOICE + "/retry", operator_invoices.retry)
    router.add_post(_INVOICE + "/cancel", operator_invoices.cancel)
    router.add_get(ADMIN + "/rates", operator_rates.rates_list, name="admin-rates")
    router.add_post(ADMIN + "/rates/{rate_id:[0-9]+}/accept", operator_rates.accept_rate)
    router.add_get(ADMIN + "/tenants", operator_tenants.tenants_list, name="admin-tenants")
    router.add_get(_TENANT, operator_tenants.tenant_page, name="admin-tenant")
    router.add_get(_TENANT + "/logs/stream", operator_tenants.log_stream, name="admin-tenant-logs")
    router.add_post(_TENANT + "/reset", operator_tenants.reset_crashloop)
    router.add_post(_TENANT + "/plan", operator_tenants.change_plan)
    router.add_post(_TENANT + "/{command:start|stop|restart}", operator_tenants.command)
