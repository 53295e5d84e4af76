"""CSRF for the console: a synchronizer token on every request that is not a GET or HEAD.

A signed-in browser's forms carry its session's token (`csrf_token` field, or the
X-CSRF-Token header for a script); a browser with no session yet (the login and language
forms) carries the token of its pre-session cookie, the double-submit pattern. SameSite=Strict
cookies already keep other sites' forms from arriving signed in; the token also stops a
same-site page or an older browser. A refusal is a 403 page, a security log line and a count.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from colmena.config.metrics import SECURITY_EVENTS
from colmena.domain.console_sessions import same_secret
from colmena.http.console.core import CSRF_FIELD, CSRF_HEADER, HtmlError, csrf_token

log = structlog.get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
EXPIRED_FORM = (
    "This form has expired or did not come from the console. Reload the page and try again."
)


async def _given(request: web.Request) -> str | None:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.content_type in FORM_TYPES:
        value = (await request.post()).get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


@web.middleware
async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method in SAFE_METHODS or request.match_info.http_exception is not None:
        return await handler(request)
    if not same_secret(await _given(request), csrf_token(request)):
        SECURITY_EVENTS.labels(reason="console_csrf_invalid").inc()
        log.warning("security: console request without a valid CSRF token", path=request.path)
        raise HtmlError(403, EXPIRED_FORM)
    return await handler(request)
