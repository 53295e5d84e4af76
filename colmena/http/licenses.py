"""Customer-facing license routes: the public key, online status checks, one-time downloads.

`GET /downloads/{token}` only shows a page with a button: mail scanners (Safe Links and the
like) fetch every link in a message before the customer clicks, and must not spend a one-time
download. `POST` spends it, atomically, and streams the zip, unless another site's page sent it
(`Sec-Fetch-Site: cross-site`, or an `Origin` that is not ours): a form elsewhere must not spend
a customer's download without them. Tokens are never logged; the download log keys on the
link's id.
"""

from __future__ import annotations

import asyncio
import html
import os
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import asyncpg
import structlog
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from colmena.config.metrics import LICENSE_DOWNLOADS, SECURITY_EVENTS
from colmena.domain.downloads import looks_like_token, product_name, token_digest
from colmena.domain.licensing import (
    BadSignature,
    LicenseKeyError,
    SigningKeyError,
    evaluate_status,
    verify_license_key,
)
from colmena.gateways.license_keys import public_key
from colmena.http.context import RESOURCES, SETTINGS
from colmena.http.errors import ApiError
from colmena.http.middlewares import RATE_LIMITER, client_ip, record_failed_auth
from colmena.http.ratelimit import per_minute, retry_after_header
from colmena.store import licenses as store

log = structlog.get_logger(__name__)

DOWNLOAD_ROUTE = "/downloads/{token}"
HTML_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
CHUNK = 256 * 1024

_AGAIN_ES = "Responde al correo de compra y te enviaremos un enlace nuevo."
_AGAIN_EN = "Reply to your purchase email and we will send you a new link."
# state -> (title, paragraphs): Spanish first, then English.
_GONE: dict[str, tuple[str, list[str]]] = {
    "used": (
        "Este enlace ya se usó / This link has already been used",
        ["Cada enlace sirve para un número limitado de descargas. " + _AGAIN_ES,
         "Each link works for a limited number of downloads. " + _AGAIN_EN],
    ),
    "expired": ("Este enlace venció / This link has expired", [_AGAIN_ES, _AGAIN_EN]),
    "replaced": (
        "Este enlace fue reemplazado / This link was replaced",
        ["Te enviamos un enlace más reciente: usa el del último correo.",
         "We sent you a newer link: use the one in the latest email."],
    ),
    "revoked": (
        "Esta licencia fue revocada / This license was revoked",
        ["La licencia ya no es válida. Si crees que es un error, responde al correo de compra.",
         "The license is no longer valid. "
         "If you think this is a mistake, reply to your purchase email."],
    ),
}  # fmt: skip


def _page(
    status: int,
    title: str,
    paragraphs: list[str],
    *,
    form: str = "",
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A small bilingual page; every value is escaped, nothing is loaded from elsewhere."""
    body = "\n".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    document = (
        '<!DOCTYPE html>\n<html lang="es"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{html.escape(title)}</title></head>\n"
        '<body style="font-family: sans-serif; max-width: 36em; margin: 3em auto; '
        'line-height: 1.5;">\n'
        f"<h1>{html.escape(title)}</h1>\n{body}\n{form}</body></html>\n"
    )
    return web.Response(
        status=status,
        text=document,
        content_type="text/html",
        headers={
            "Content-Security-Policy": HTML_CSP,
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            **(headers or {}),
        },
    )


def _not_found() -> web.Response:
    return _page(404, "Enlace no encontrado / Link not found", [
        "Este enlace de descarga no existe. Revisa que lo copiaste completo desde el correo.",
        "This download link does not exist. Check that you copied all of it from the email.",
    ])  # fmt: skip


def _gone(state: str) -> web.Response:
    title, paragraphs = _GONE.get(state, _GONE["expired"])
    return _page(410, title, paragraphs)


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _key(request: web.Request) -> Ed25519PublicKey:
    try:
        return public_key(request.app[SETTINGS])
    except SigningKeyError:
        log.error(
            "license public key is not configured (COLMENA_LICENSE_PUBLIC_KEY or _SIGNING_KEY)"
        )
        raise ApiError(
            503, "license_key_unavailable", "license keys are not configured on this server"
        ) from None


async def public_key_pem(request: web.Request) -> web.Response:
    pem = _key(request).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return web.Response(
        body=pem,
        content_type="application/x-pem-file",
        headers={"Cache-Control": "public, max-age=3600"},
    )


async def license_status(request: web.Request) -> web.Response:
    """valid / revoked / expired for a key; a key that does not verify is a 400 saying why."""
    try:
        license = verify_license_key(request.match_info["key"], _key(request))
    except LicenseKeyError as exc:
        if isinstance(exc, BadSignature):
            SECURITY_EVENTS.labels(reason="license_bad_signature").inc()
            log.warning("security: license key with a bad signature", client=client_ip(request))
        raise ApiError(400, "invalid_license_key", str(exc)) from None
    try:
        license_id = uuid.UUID(license.license_id)
    except ValueError:
        license_id = None
    async with request.app[RESOURCES].pool.acquire() as conn:
        record = await store.get(conn, license_id) if license_id else None
    if record is None:
        raise ApiError(404, "unknown_license", "no license with this id was issued here")
    status = evaluate_status(license, now=datetime.now(UTC), revoked=record.revoked_at is not None)
    return web.json_response({
        "license_id": license.license_id,
        "status": status.value,
        "product": license.product,
        "edition": license.edition,
        "seats": license.seats,
        "expires_at": license.expires_at.isoformat() if license.expires_at else None,
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
    })  # fmt: skip


async def download_page(request: web.Request) -> web.Response:
    """Name the product and offer the button; spends nothing."""
    token = request.match_info["token"]
    if not looks_like_token(token):
        return await _unknown_token(request)
    async with request.app[RESOURCES].pool.acquire() as conn:
        view = await store.view_link(conn, token_digest(token))
    if view is None:
        return await _unknown_token(request)
    if view.state != "usable":
        return _gone(view.state)
    name = product_name(view.product_ref, view.edition)
    form = (
        '<form method="post"><button type="submit" style="font-size: 1.1em; padding: 0.6em 1.4em;">'
        "Descargar / Download</button></form>\n"
    )
    return _page(200, name, [
        f"Tu descarga de {name} está lista. El enlace vence el {_when(view.expires_at)}.",
        f"Your {name} download is ready. The link expires on {_when(view.expires_at)}.",
    ], form=form)  # fmt: skip


class _PackageMissing(Exception):
    """Raised inside the spending transaction so that the download is not spent."""

    def __init__(self, link: store.Consumed) -> None:
        super().__init__("package missing")
        self.link = link


@dataclass(frozen=True)
class _Spent:
    link: store.Consumed
    handle: BinaryIO
    size: int


def _open(path: Path) -> tuple[BinaryIO, int]:
    handle = path.open("rb")
    return handle, os.fstat(handle.fileno()).st_size


async def _spend(
    conn: asyncpg.Connection, digest: bytes, storage: Path, *, client: str, user_agent: str | None
) -> _Spent | store.LinkView | _PackageMissing | None:
    """The opened package when the link worked; else what the link is (None: no such link), or
    the missing package, with the link left unspent. Every outcome is in the download log."""

    async def record(link_id: int, license_id: uuid.UUID, outcome: str) -> None:
        await store.log_download(
            conn,
            link_id=link_id,
            license_id=license_id,
            outcome=outcome,
            client_ip=client,
            user_agent=user_agent,
        )

    try:
        async with conn.transaction():
            consumed = await store.consume_link(conn, digest)
            if consumed is None:
                view = await store.view_link(conn, digest)
                if view is not None:
                    if view.state == "usable":  # it expired between the two statements
                        view = replace(view, state="expired")
                    await record(view.id, view.license_id, view.state)
                return view
            await record(consumed.link_id, consumed.license_id, "ok")
            try:
                handle, size = await asyncio.to_thread(
                    _open, storage / (consumed.package_path or "")
                )
            except OSError as exc:
                raise _PackageMissing(consumed) from exc
            return _Spent(consumed, handle, size)
    except _PackageMissing as missing:
        await record(missing.link.link_id, missing.link.license_id, "unavailable")
        return missing


def _origin(url: str) -> str:
    """scheme://host[:port] as browsers serialise an Origin: lowercase, no default port."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    port = f":{parts.port}" if parts.port not in (None, default) else ""
    return f"{parts.scheme}://{parts.hostname}{port}".lower()


def _cross_site(request: web.Request) -> str | None:
    """Why this POST came from another site's page, or None. An absent Origin is allowed: the
    customer's own browser always sends one with a form post, and tools send none."""
    if request.headers.get("Sec-Fetch-Site", "").strip().lower() == "cross-site":
        return "Sec-Fetch-Site: cross-site"
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    try:
        ours = {
            _origin(f"{request.scheme}://{request.host}"),
            _origin(request.app[SETTINGS].license_links_base),
        }
        sent = _origin(origin.strip())
    except ValueError:  # an Origin (or Host) that is not a URL at all
        return "Origin is not a URL"
    return None if sent in ours else "foreign Origin"


def _refuse_cross_site(client: str, reason: str) -> web.Response:
    SECURITY_EVENTS.labels(reason="download_cross_site").inc()
    log.warning("security: cross-site download post refused", reason=reason, client=client)
    return _page(403, "Descarga bloqueada / Download blocked", [
        "Otra página intentó usar tu enlace. Ábrelo directamente desde el correo de compra.",
        "Another page tried to use your link. Open it directly from your purchase email.",
    ])  # fmt: skip


async def download(request: web.Request) -> web.StreamResponse:
    """Spend one download atomically and stream the package."""
    token = request.match_info["token"]
    client = client_ip(request)
    if (reason := _cross_site(request)) is not None:
        return _refuse_cross_site(client, reason)
    if not looks_like_token(token):
        return await _refuse_unknown(request, client)
    digest = token_digest(token)
    # Per link, whatever the address: one link cannot be hammered from many clients.
    per_link = per_minute(request.app[SETTINGS].license_download_token_per_minute)
    wait = await request.config_dict[RATE_LIMITER].spend("download_link", digest.hex(), per_link)
    if wait > 0:
        LICENSE_DOWNLOADS.labels(outcome="rate_limited").inc()
        SECURITY_EVENTS.labels(reason="download_token_rate_limited").inc()
        log.warning("security: download link rate limited", client=client)
        return _page(429, "Demasiados intentos / Too many attempts", [
            "Espera un momento antes de volver a intentarlo.", "Wait a moment before trying again.",
        ], headers={"Retry-After": retry_after_header(wait)})  # fmt: skip

    storage = request.app[SETTINGS].license_storage_path
    async with request.app[RESOURCES].pool.acquire() as conn:
        result = await _spend(
            conn, digest, storage, client=client, user_agent=request.headers.get("User-Agent")
        )
    if result is None:
        return await _refuse_unknown(request, client)
    if isinstance(result, _PackageMissing):
        LICENSE_DOWNLOADS.labels(outcome="unavailable").inc()
        log.error("download refused: package missing on disk", link_id=result.link.link_id,
                  license_id=str(result.link.license_id))  # fmt: skip
        return _page(503, "Descarga no disponible / Download unavailable", [
            "No pudimos preparar tu descarga. Inténtalo más tarde: el enlace no se gastó.",
            "We could not prepare your download. Try again later: the link was not spent.",
        ])  # fmt: skip
    if isinstance(result, store.LinkView):
        LICENSE_DOWNLOADS.labels(outcome=result.state).inc()
        log.info(
            "download refused",
            link_id=result.id,
            license_id=str(result.license_id),
            outcome=result.state,
            client=client,
        )
        return _gone(result.state)
    LICENSE_DOWNLOADS.labels(outcome="ok").inc()
    log.info(
        "download started",
        link_id=result.link.link_id,
        license_id=str(result.link.license_id),
        size=result.size,
        client=client,
    )
    return await _stream(
        request, result.handle, result.size, filename=Path(result.link.package_path or "").name
    )


async def _unknown_token(request: web.Request) -> web.Response:
    """A token that names no link is a wrong credential: it spends a failed attempt."""
    await record_failed_auth(request)
    return _not_found()


async def _refuse_unknown(request: web.Request, client: str) -> web.Response:
    LICENSE_DOWNLOADS.labels(outcome="unknown").inc()
    SECURITY_EVENTS.labels(reason="download_unknown_token").inc()
    log.warning("security: download with an unknown token", client=client)
    return await _unknown_token(request)


async def _stream(
    request: web.Request, handle: BinaryIO, size: int, *, filename: str
) -> web.StreamResponse:
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "application/zip",
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Content-Length": str(size),
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )
    try:
        await response.prepare(request)
        while chunk := await asyncio.to_thread(handle.read, CHUNK):
            await response.write(chunk)
    finally:
        handle.close()
    await response.write_eof()
    return response


def setup(app: web.Application) -> None:
    app.router.add_get("/licenses/public-key", public_key_pem)
    app.router.add_get("/licenses/{key}/status", license_status)
    app.router.add_get(DOWNLOAD_ROUTE, download_page)
    app.router.add_post(DOWNLOAD_ROUTE, download)
