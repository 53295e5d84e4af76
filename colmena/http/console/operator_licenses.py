"""Licenses: a search by license id, customer email or payment; one license with its emails and
links; resend its link and revoke it, each after a confirmation.

Both actions are those of `colmena license resend|revoke`, through the same store functions, in
one audited transaction: a resend supersedes the unsent emails, kills the older links and
records a new email with its outbox message (the email actor sends it; the ingress imports no
actor), published after the commit. A revoke makes status checks answer "revoked" and stops its
links at once.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from aiohttp import web

from colmena.domain.licensing import status_at
from colmena.http.console.core import HtmlError, confirmation, form, see_other, translate
from colmena.http.console.operator_common import (
    ADMIN,
    PAGE_SIZE,
    audited,
    connection,
    int_cursor,
    page_of,
    publish,
    query_text,
    record,
    show,
)
from colmena.store import console_queries as queries
from colmena.store import licenses as store
from colmena.store import outbox

MAX_REASON = 500


async def licenses_list(request: web.Request) -> web.Response:
    text = query_text(request, "q")
    async with connection(request) as conn:
        rows = await queries.search_licenses(
            conn, text=text, before_payment=int_cursor(request), limit=PAGE_SIZE
        )
    return show(
        request,
        "licenses.html",
        {"page": page_of(rows, lambda row: row.payment_id), "q": text or ""},
    )


def _license_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["license_id"])
    except ValueError:
        raise HtmlError(404, "No such license") from None


async def license_page(request: web.Request) -> web.Response:
    license_id = _license_id(request)
    async with connection(request) as conn:
        found = await store.overview(conn, license_id=license_id, limit=1)
        if not found:
            raise HtmlError(404, "No such license")
        emails = await store.emails_of(conn, license_id)
        links = await store.links_of(conn, license_id)
    item = found[0]
    record_ = item.license
    status = status_at(
        expires_at=record_.expires_at,
        revoked=record_.revoked_at is not None,
        now=datetime.now(UTC),
    ).value
    return show(
        request,
        "license.html",
        {"item": item, "license": record_, "status": status, "emails": emails, "links": links},
    )


def _license_path(license_id: uuid.UUID) -> str:
    return f"{ADMIN}/licenses/{license_id}"


async def resend(request: web.Request) -> web.Response:
    license_id = _license_id(request)
    posted = await form(request)
    asked = confirmation(
        request,
        posted,
        message="Email the customer a fresh download link? Older links stop working now.",
        cancel_to=_license_path(license_id),
    )
    if asked is not None:
        return asked
    async with audited(request) as conn:
        license = await store.get(conn, license_id)
        if license is None:
            raise HtmlError(404, "No such license")
        if license.revoked_at is not None:
            raise HtmlError(409, "This license is revoked: nothing to resend")
        await store.supersede_unsent(conn, license_id)
        await store.invalidate_links(conn, license_id)
        email_id = await store.add_email(conn, license_id, "resend")
        row = await outbox.record(
            conn,
            queue="licenses",
            actor="send_license_email",
            args=[email_id],
            dedupe_key=f"license-email:{email_id}",
        )
        await record(
            conn,
            request,
            action="license.resend",
            subject_kind="license",
            subject_id=str(license_id),
            after={"email_id": email_id},
        )
    publish(request, [row])
    return see_other(
        request,
        _license_path(license_id),
        notice=translate(request, "A new link is on its way; older links no longer work"),
    )


async def revoke(request: web.Request) -> web.Response:
    license_id = _license_id(request)
    posted = await form(request)
    reason = posted.get("reason", "").strip() or "revoked by an operator"
    if len(reason) > MAX_REASON or "\x00" in reason:
        raise HtmlError(400, "That reason is too long or not text")
    asked = confirmation(
        request,
        posted,
        message="Revoke this license? Status checks will answer revoked and its links stop.",
        cancel_to=_license_path(license_id),
    )
    if asked is not None:
        return asked
    async with audited(request) as conn:
        if await store.get(conn, license_id) is None:
            raise HtmlError(404, "No such license")
        revoked = await store.revoke(conn, license_id, reason)
    notice = "License revoked; its links no longer work" if revoked else "Already revoked"
    return see_other(request, _license_path(license_id), notice=translate(request, notice))
