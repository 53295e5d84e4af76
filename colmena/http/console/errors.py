"""The console's own error pages and security headers.

Inside /console every failure is an HTML page in the viewer's language, not the API's JSON:
`HtmlError` from a page, aiohttp's HTTP errors (404, 405...), an `ApiError` from a shared
helper, and anything unexpected (logged with its traceback, shown as a plain 500).

The console gets a Content-Security-Policy of its own: scripts, styles and connections from
the console's origin only, no inline script or style, no framing, no base tag, forms posting
only here. Applied in `on_response_prepare`, so streamed answers (live logs) carry it too; a
route that sets a CSP of its own keeps it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from colmena.http.console.core import HtmlError, render, translate
from colmena.http.errors import ApiError
from colmena.http.middlewares import SECURITY_HEADERS, HtmlErrorPage

log = structlog.get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
CONSOLE_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# What an HTTP error of aiohttp's shows (English source strings, translated at render).
MESSAGES = {
    400: "The request could not be understood.",
    403: "You may not do this.",
    404: "There is no such page.",
    405: "This page does not take that kind of request.",
    413: "What was sent is too large.",
    429: "Too many attempts. Wait a moment and try again.",
    500: "Something went wrong on our side. It has been logged.",
    503: "The service is busy or not configured. Try again shortly.",
}
KEPT_HEADERS = ("Allow", "Retry-After")


def error_page(
    request: web.Request,
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    console: web.Application | None = None,
) -> web.Response:
    response = render(
        request,
        "console/error.html",
        {"status": status, "message": translate(request, message, console=console)},
        status=status,
        console=console,
    )
    response.headers.update(headers or {})
    return response


def refusal_page(console: web.Application) -> HtmlErrorPage:
    """The page for a refusal the ingress makes before a request reaches the console (its rate
    limits, its body limit): the console's error page, not the API's JSON."""

    def page(
        request: web.Request, status: int, message: str, headers: dict[str, str]
    ) -> web.StreamResponse:
        kept = {name: headers[name] for name in KEPT_HEADERS if name in headers}
        shown = MESSAGES.get(status, message)
        return error_page(request, status, shown, kept, console=console)

    return page


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HtmlError as exc:
        return error_page(request, exc.status, exc.message, exc.headers)
    except ApiError as exc:
        if exc.status_code >= 500:
            log.warning("console page unavailable", code=exc.code, reason=exc.error_message)
        message = MESSAGES.get(exc.status_code, exc.error_message)
        return error_page(request, exc.status_code, message, dict(exc.headers))
    except web.HTTPException as exc:
        if exc.status_code < 400:
            raise
        kept = {name: exc.headers[name] for name in KEPT_HEADERS if name in exc.headers}
        message = MESSAGES.get(exc.status_code, exc.reason)
        return error_page(request, exc.status_code, message, kept)
    except ConnectionResetError:
        raise  # the browser left (a live log closed): nobody to show a page to
    except Exception:
        log.exception("unhandled error in the console")
        return error_page(request, 500, MESSAGES[500])


async def console_headers(_request: web.Request, response: web.StreamResponse) -> None:
    """For the console sub-app's `on_response_prepare` (runs after the ingress's own)."""
    csp = response.headers.get("Content-Security-Policy")
    if csp is None or csp == SECURITY_HEADERS["Content-Security-Policy"]:
        response.headers["Content-Security-Policy"] = CONSOLE_CSP
    for name, value in CONSOLE_HEADERS.items():
        response.headers.setdefault(name, value)
