"""Customer-facing license routes: the public key, online status checks, one-time downloads.

`GET /downloads/{token}` only shows a page with a button: mail scanners (Safe Links and the
like) fetch every link in a message before the customer clicks, and must not spend a one-time
download. `POST` spends it, atomically, and streams the zip, unless another site's page sent it
(`Sec-Fetch-Site: cross-site`, or an `Origin` that is not ours): a form elsewhere must not spend
a customer's download without them. The zip is assembled here, from this host's product
directory and the license row (`colmena.gateways.packaging`), and must match the SHA-256 the
worker recorded when it emailed the link; if it does not, the link is left unspent. Tokens are
never logged; the download log keys on the link's id.
"""

from __future__ import annotations

import asyncio
import html
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from urllib.parse import urlsplit

import asyncpg
import structlog
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from colmena.config import Settings
from colmena.config.metrics import LICENSE_DOWNLOADS, SECURITY_EVENTS
from colmena.domain.downloads import looks_like_token, product_name, token_digest
from colmena.domain.licensing import (
    BadSignature,
    LicenseKeyError,
    SigningKeyError,
    evaluate_status,
    verify_license_key,
)
from colmena.domain.packaging import PackagingError, package_filename
from colmena.gateways.license_keys import public_key
from colmena.gateways.packaging import PACKAGER, Package, Packager
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


def _suspended() -> web.Response:
    """Not gone: the payment is disputed, and the same link works again if the dispute is won."""
    return _page(403, "Esta licencia está suspendida / This license is suspended", [
        "El pago de esta licencia está en disputa. Si se resuelve a tu favor, este mismo enlace "
        "volverá a funcionar.",
        "The payment for this license is under dispute. If it is resolved in your favour, this "
        "same link will work again.",
    ])  # fmt: skip


def _gone(state: str) -> web.Response:
    if state == "suspended":
        return _suspended()
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


@dataclass(frozen=True)
class _Unavailable:
    """The package could not be assembled as recorded; the link was left unspent."""

    link: store.LinkView
    reason: str


@dataclass(frozen=True)
class _Spent:
    link: store.LinkView
    package: Package


def _assemble(packager: Packager, link: store.LinkView, settings: Settings) -> Package:
    """Blocking: the link's package, checked against the digest its email recorded."""
    if link.package_sha256 is None:
        raise PackagingError("no package digest was recorded for this license")
    license = verify_license_key(link.license_key, public_key(settings))
    package = packager.assemble(link.product_ref, license, link.license_key)
    if package.sha256 != link.package_sha256:
        package.close()
        raise PackagingError(
            f"the package assembled here has SHA-256 {package.sha256}, not the recorded "
            f"{link.package_sha256}: this host's product directory differs from the one the "
            "link was emailed with (contents, modification times or modes)"
        )
    return package


async def _spend(
    request: web.Request, conn: asyncpg.Connection, digest: bytes, *, client: str
) -> _Spent | store.LinkView | _Unavailable | None:
    """The package, assembled and checked, when the link worked; else what the link is (None:
    no such link), or why the package is unavailable, with the link left unspent. The package
    is assembled before the link is spent, so no transaction waits on it. Every outcome is in
    the download log."""

    async def record(link: store.LinkView, outcome: str) -> None:
        await store.log_download(
            conn,
            link_id=link.id,
            license_id=link.license_id,
            outcome=outcome,
            client_ip=client,
            user_agent=request.headers.get("User-Agent"),
        )

    view = await store.view_link(conn, digest)
    if view is None:
        return None
    if view.state != "usable":
        await record(view, view.state)
        return view
    try:
        package = await asyncio.to_thread(
            _assemble, request.app[RESOURCES].shared(PACKAGER), view, request.app[SETTINGS]
        )
    except (PackagingError, LicenseKeyError, SigningKeyError, OSError) as exc:
        await record(view, "unavailable")
        return _Unavailable(view, str(exc))
    try:
        async with conn.transaction():
            if await store.consume_link(conn, digest) is not None:
                await record(view, "ok")
                return _Spent(view, package)
            # Used up, replaced or revoked since it was read, or expired meanwhile.
            current = await store.view_link(conn, digest) or view
            if current.state == "usable":
                current = replace(current, state="expired")
            await record(current, current.state)
    except BaseException:
        package.close()
        raise
    package.close()
    return current


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

    async with request.app[RESOURCES].pool.acquire() as conn:
        result = await _spend(request, conn, digest, client=client)
    if result is None:
        return await _refuse_unknown(request, client)
    if isinstance(result, _Unavailable):
        LICENSE_DOWNLOADS.labels(outcome="unavailable").inc()
        log.error(
            "download refused: the package cannot be assembled as recorded; the link is "
            "unspent (fix this host's products directory, or `colmena license resend`)",
            link_id=result.link.id,
            license_id=str(result.link.license_id),
            reason=result.reason,
        )
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
        link_id=result.link.id,
        license_id=str(result.link.license_id),
        size=result.package.size,
        client=client,
    )
    with result.package as package:
        return await _stream(request, package, filename=package_filename(result.link.product_ref))


async def _unknown_token(request: web.Request) -> web.Response:
    """A token that names no link is a wrong credential: it spends a failed attempt."""
    await record_failed_auth(request)
    return _not_found()


async def _refuse_unknown(request: web.Request, client: str) -> web.Response:
    LICENSE_DOWNLOADS.labels(outcome="unknown").inc()
    SECURITY_EVENTS.labels(reason="download_unknown_token").inc()
    log.warning("security: download with an unknown token", client=client)
    return await _unknown_token(request)


async def _stream(request: web.Request, package: Package, *, filename: str) -> web.StreamResponse:
    response = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "application/zip",
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Content-Length": str(package.size),
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )
    await response.prepare(request)
    offset = 0
    while offset < package.size:
        chunk = await asyncio.to_thread(package.read_at, offset, CHUNK)
        await response.write(chunk)
        offset += len(chunk)
    await response.write_eof()
    return response


def setup(app: web.Application) -> None:
    app.router.add_get("/licenses/public-key", public_key_pem)
    app.router.add_get("/licenses/{key}/status", license_status)
    app.router.add_get(DOWNLOAD_ROUTE, download_page)
    app.router.add_post(DOWNLOAD_ROUTE, download)
