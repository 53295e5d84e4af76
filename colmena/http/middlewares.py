"""Cross-cutting concerns of the ingress, one plain async middleware each (aiohttp style).

Order (outermost first): request id -> access log and metrics -> security headers -> JSON errors
-> body limit -> rate limit -> handler.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from colmena.config.metrics import (
    HTTP_IN_FLIGHT,
    HTTP_LATENCY,
    HTTP_REQUESTS,
    SECURITY_EVENTS,
)
from colmena.http.errors import ApiError, error_response
from colmena.http.ratelimit import RateLimiter, retry_after_header

log = structlog.get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

RATE_LIMITERS = web.AppKey("rate_limiters", dict)
# (route, code) pairs whose 503 was already logged: an operator needs the reason once, not per
# request of a provider retrying against an unconfigured endpoint.
UNAVAILABLE_LOGGED = web.AppKey("unavailable_logged", set[tuple[str, str]])
DEFAULT_LIMITER = web.AppKey("default_limiter", RateLimiter)
MAX_BODY = web.AppKey("max_body", int)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "Cache-Control": "no-store",
}


def route_name(request: web.Request) -> str:
    """The route's template (never the raw path), so metric labels stay bounded."""
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


def client_ip(request: web.Request) -> str:
    return request.remote or "unknown"


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-Id", "")
    request_id = (
        incoming if 0 < len(incoming) <= 64 and incoming.isprintable() else uuid.uuid4().hex
    )
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        response = await handler(request)
        response.headers["X-Request-Id"] = request_id
        return response


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
    finally:
        HTTP_IN_FLIGHT.dec()
        elapsed = time.perf_counter() - started
        HTTP_REQUESTS.labels(route=route, method=request.method, status=str(status)).inc()
        HTTP_LATENCY.labels(route=route, method=request.method).observe(elapsed)
        log.info(
            "http request",
            method=request.method,
            route=route,
            status=status,
            duration_ms=round(elapsed * 1000, 2),
            client=client_ip(request),
        )


@web.middleware
async def security_headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _log_unavailable_once(request: web.Request, exc: ApiError) -> None:
    logged = request.config_dict[UNAVAILABLE_LOGGED]
    key = (route_name(request), exc.code)
    if key not in logged:
        logged.add(key)
        log.warning(
            "answering 503", route=key[0], code=exc.code, reason=exc.error_message, once=True
        )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as JSON; an unexpected one is logged with its traceback, not sent."""
    try:
        return await handler(request)
    except ApiError as exc:
        if exc.status_code == 503:
            _log_unavailable_once(request, exc)
        response = error_response(exc.status_code, exc.code, exc.error_message, **exc.extra)
        response.headers.update(exc.headers)
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
    route = route_name(request)
    limiter = request.app[RATE_LIMITERS].get(route, request.app[DEFAULT_LIMITER])
    wait = limiter.acquire(client_ip(request), route)
    if wait > 0:
        SECURITY_EVENTS.labels(reason="rate_limited").inc()
        log.warning("security: rate limited", route=route, client=client_ip(request))
        raise ApiError(
            429,
            "rate_limited",
            "too many requests; slow down",
            headers={"Retry-After": retry_after_header(wait)},
        )
    return await handler(request)


MIDDLEWARES = [
    request_id_middleware,
    access_log_middleware,
    security_headers_middleware,
    error_middleware,
    body_limit_middleware,
    rate_limit_middleware,
]


def set_route_limit(
    app: web.Application, route: str, per_minute: int, *, burst: int | None = None
) -> None:
    """Give one route (by its template) its own per-IP limit instead of the default."""
    app[RATE_LIMITERS][route] = RateLimiter(per_minute, burst=burst)
