"""Cross-cutting concerns of the ingress, one plain async middleware each (aiohttp style).

Order (outermost first): request id -> access log and metrics -> JSON errors -> refusal delay ->
body limit -> rate limit -> body read deadline -> handler. Security headers are not a middleware
but an `on_response_prepare` hook (`security_headers`), so streamed answers carry them too.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import Counter, Histogram

from colmena.config.metrics import (
    HTTP_CLIENT_ABORTS,
    HTTP_IN_FLIGHT,
    HTTP_LATENCY,
    HTTP_REQUESTS,
    SECURITY_EVENTS,
)
from colmena.config.rate_limit_settings import IpNetwork
from colmena.http.client_address import client_address
from colmena.http.errors import ApiError, error_response
from colmena.http.ratelimit import FAILED_AUTH, RequestLimiter, retry_after_header
from colmena.http.tenant_limits import TenantSlots

log = structlog.get_logger(__name__)
# The stdlib logger structlog writes through (colmena.config.logging): the access line's fields
# (the client's address among them) are worked out only when it says INFO is on.
_stdlib_log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

RATE_LIMITER = web.AppKey("rate_limiter", RequestLimiter)
TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple[IpNetwork, ...])
# (route, code) pairs whose 503 was already logged: an operator needs the reason once, not per
# request of a provider retrying against an unconfigured endpoint.
UNAVAILABLE_LOGGED = web.AppKey("unavailable_logged", set[tuple[str, str]])
MAX_BODY = web.AppKey("max_body", int)
BODY_READ_TIMEOUT = web.AppKey("body_read_timeout", float)
REFUSAL_DELAY = web.AppKey("refusal_delay", float)
REFUSAL_MAX_HELD = web.AppKey("refusal_max_held", int)
# Per client address: the refusals waiting out their delay.
REFUSALS_HELD = web.AppKey("refusals_held", TenantSlots)
# A path prefix whose answers are HTML pages (the console), and what renders a refusal raised
# out here, before the request reaches that sub-app's own error pages (a rate limit, a body
# too large): (request, status, message, headers) -> page.
HtmlErrorPage = Callable[[web.Request, int, str, dict[str, str]], web.StreamResponse]
HTML_ERROR_PAGES = web.AppKey("html_error_pages", dict[str, HtmlErrorPage])
# What the access log and metrics record for a client that left before its body arrived (nginx's
# "client closed request"): nobody receives it, and it is not the server's failure.
CLIENT_CLOSED_REQUEST = 499

# HSTS is sent on every answer: browsers ignore it over plain HTTP (RFC 6797), so it only ever
# takes effect through the TLS front the ingress is deployed behind.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "Cache-Control": "no-store",
    "Strict-Transport-Security": "max-age=31536000",
    "Permissions-Policy": (
        "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), "
        "microphone=(), payment=(), usb=()"
    ),
}
# Replaces aiohttp's "Python/3.x aiohttp/x.y": versions help no client, only a scanner.
SERVER_NAME = "colmena"


def route_name(request: web.Request) -> str:
    """The route's template (never the raw path), so metric labels stay bounded."""
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


_CLIENT_IP = web.RequestKey("client_ip", str)


def client_ip(request: web.Request) -> str:
    """The client's address; X-Forwarded-For counts only when a trusted proxy handed it on.
    Worked out once per request: the rate limit, the access line and refusals all ask."""
    found = request.get(_CLIENT_IP)
    if found is None:
        trusted = request.config_dict.get(TRUSTED_PROXIES, ())
        found = client_address(
            request.remote, request.headers.getall("X-Forwarded-For", ()), trusted
        )
        request[_CLIENT_IP] = found
    return found


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-Id", "")
    request_id = (
        incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else secrets.token_hex(16)
    )
    tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
    try:
        response = await handler(request)
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
    response.headers["X-Request-Id"] = request_id
    return response


@functools.lru_cache(maxsize=1024)
def _request_metrics(route: str, method: str, status: int) -> tuple[Counter, Histogram]:
    """The metric children of one (route, method, status); `.labels()` takes a lock and builds
    a key each time. Bounded: routes are templates, and a client can make up methods."""
    return (
        HTTP_REQUESTS.labels(route=route, method=method, status=str(status)),
        HTTP_LATENCY.labels(route=route, method=method),
    )


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    route = route_name(request)
    status = 500
    HTTP_IN_FLIGHT.inc()
    try:
        response = await handler(request)
        status = response.status
        return response
    except asyncio.CancelledError:  # the connection was lost (or the server stops): no answer
        status = CLIENT_CLOSED_REQUEST
        raise
    finally:
        HTTP_IN_FLIGHT.dec()
        elapsed = time.perf_counter() - started
        requests, latency = _request_metrics(route, request.method, status)
        requests.inc()
        latency.observe(elapsed)
        if _stdlib_log.isEnabledFor(logging.INFO):
            log.info(
                "http request",
                method=request.method,
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
                client=client_ip(request),
            )


async def security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    """For `on_response_prepare`: runs before the headers of any answer are sent, streamed
    downloads included; a route's own value of a header wins, the Server name never changes."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers["Server"] = SERVER_NAME


def _log_unavailable_once(request: web.Request, exc: ApiError) -> None:
    logged = request.config_dict[UNAVAILABLE_LOGGED]
    key = (route_name(request), exc.code)
    if key not in logged:
        logged.add(key)
        log.warning(
            "answering 503", route=key[0], code=exc.code, reason=exc.error_message, once=True
        )


def _html_error_page(request: web.Request) -> HtmlErrorPage | None:
    pages = request.config_dict.get(HTML_ERROR_PAGES, {})
    for prefix, page in pages.items():
        if request.path == prefix or request.path.startswith(prefix + "/"):
            return page
    return None


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as JSON; an unexpected one is logged with its traceback, not sent."""
    try:
        return await handler(request)
    except ApiError as exc:
        if exc.status_code == 503:
            _log_unavailable_once(request, exc)
        page = _html_error_page(request)
        if page is not None:
            response = page(request, exc.status_code, exc.error_message, dict(exc.headers))
        else:
            response = error_response(exc.status_code, exc.code, exc.error_message, **exc.extra)
            response.headers.update(exc.headers)
        if exc.close:
            response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status_code < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        response = error_response(exc.status_code, code, exc.reason)
        for header in ("Retry-After", "Allow", "WWW-Authenticate"):
            if header in exc.headers:
                response.headers[header] = exc.headers[header]
        return response
    except RequestPayloadError as exc:
        # The body did not decode as its Content-Encoding said, or the client went away mid-body:
        # the request is at fault, not the server.
        log.warning("request body unreadable", route=route_name(request), error=str(exc))
        return error_response(400, "unreadable_body", "the request body could not be read")
    except Exception:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "something went wrong on our side")


@web.middleware
async def refusal_delay_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A 429 leaves after COLMENA_REFUSAL_DELAY_S, not at once.

    Answered at once, a client over its bounds asks again at once: one flooding tenant then
    keeps the event loop busy with refusals, and every other tenant's request waits behind
    them at each of its awaits. Held back, each of the flood's connections costs one timer per
    delay and nothing else (nginx's limit_req delays excess the same way). Refusals held per
    client address are bounded (COLMENA_REFUSAL_MAX_HELD); past that a 429 leaves at once and
    closes the connection, so a client cannot park unbounded work here either.
    """
    try:
        return await handler(request)
    except ApiError as exc:
        delay = request.config_dict[REFUSAL_DELAY]
        if exc.status_code != 429 or delay <= 0:
            raise
        held = request.config_dict[REFUSALS_HELD]
        client = client_ip(request)
        if not held.take(client, request.config_dict[REFUSAL_MAX_HELD]):
            exc.close = True
            raise
        try:
            await asyncio.sleep(delay)
        finally:
            held.release(client)
        raise


@web.middleware
async def body_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse oversized bodies from the declared length, before reading a byte of them."""
    limit = request.app[MAX_BODY]
    if request.content_length is not None and request.content_length > limit:
        SECURITY_EVENTS.labels(reason="body_too_large").inc()
        log.warning(
            "security: body too large", route=route_name(request), length=request.content_length
        )
        raise ApiError(413, "body_too_large", f"request bodies are limited to {limit} bytes")
    return await handler(request)


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Spend from the client's budget for the route's group; a locked-out client gets none."""
    route = route_name(request)
    limiter = request.config_dict[RATE_LIMITER]
    if not limiter.limits(route):
        return await handler(request)
    client = client_ip(request)
    refusal = await limiter.admit(client, route)
    if refusal is None:
        return await handler(request)
    headers = {"Retry-After": retry_after_header(refusal.wait_s)}
    if refusal.budget == FAILED_AUTH:
        SECURITY_EVENTS.labels(reason="locked_out").inc()
        log.warning("security: locked-out client refused", route=route, client=client)
        raise ApiError(
            429,
            "locked_out",
            "too many failed authentication attempts; retry later",
            headers=headers,
        )
    SECURITY_EVENTS.labels(reason="rate_limited").inc()
    log.warning("security: rate limited", route=route, client=client, budget=refusal.budget)
    raise ApiError(429, "rate_limited", "too many requests; slow down", headers=headers)


async def record_failed_auth(request: web.Request) -> None:
    """Spend one of the client's failed-authentication attempts (a wrong token or signature);
    the attempt that empties the budget locks the client out, counted and logged once."""
    client = client_ip(request)
    if await request.config_dict[RATE_LIMITER].fail(client):
        SECURITY_EVENTS.labels(reason="auth_lockout").inc()
        log.warning(
            "security: client locked out after failed authentication",
            client=client,
            route=route_name(request),
        )


@web.middleware
async def body_read_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The body arrives within COLMENA_BODY_READ_TIMEOUT_S or the request ends with a 408: a
    client trickling it cannot hold a handler, and what it holds, for minutes. A client that
    hangs up mid-body is counted as an abort, not answered as an error."""
    if not request.body_exists or request.content.is_eof():  # nothing left to wait for
        return await handler(request)
    deadline = request.config_dict[BODY_READ_TIMEOUT]
    route = route_name(request)
    try:
        async with asyncio.timeout(deadline):
            if request.content_type == "multipart/form-data":
                # aiohttp parses a form straight from the stream and keeps no copy of the bytes,
                # so the handler, which reads its form first, runs under the deadline instead.
                return await handler(request)
            await request.read()  # kept by aiohttp for the handler's read(), json(), text()
    except TimeoutError:
        SECURITY_EVENTS.labels(reason="body_read_timeout").inc()
        log.warning("security: request body too slow", route=route, client=client_ip(request))
        response = error_response(
            408, "body_timeout", f"the request body did not arrive within {deadline:g} s"
        )
        # Connection: close. aiohttp still drains what is left of the body for at most its
        # lingering time (10 s), with no handler waiting on it, then closes.
        response.force_close()
        return response
    except ConnectionResetError:
        HTTP_CLIENT_ABORTS.labels(route=route).inc()
        log.info("client went away before its body arrived", route=route, client=client_ip(request))
        return web.Response(status=CLIENT_CLOSED_REQUEST)
    return await handler(request)


MIDDLEWARES = [
    request_id_middleware,
    access_log_middleware,
    error_middleware,
    refusal_delay_middleware,
    body_limit_middleware,
    rate_limit_middleware,
    body_read_middleware,
]
