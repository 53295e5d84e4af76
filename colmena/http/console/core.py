"""What every console page is built from: who is looking, rendering, forms, redirects, errors,
pagination.

Pages never check who is signed in: the session middleware (`sessions`) has done it by the
time a handler runs, and `request[VIEWER]` says who it is. Pages never check CSRF tokens
either: the middleware (`csrf`) checks every request that is not a GET or HEAD. A page reads
its form with `form`, asks for a confirmation with `confirmation` before anything that moves
money or licenses, answers a POST with `see_other` (303 and a one-shot notice), and raises
`HtmlError` for a page of its own status. Lists are keyset-paginated: `page_cursor` is where a
page starts, `encode_cursor`/`decode_cursor` turn a (sort key, id) pair into an opaque
url-safe string and back, and `Page` is what the `pager` macro shows.

Messages given to `see_other`, `confirmation` and `HtmlError` may be English source strings:
they are translated at render time when a catalog has them.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import urlsplit

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from colmena.domain.console_sessions import new_secret
from colmena.http.console.i18n import CATALOG, Language, request_language, translated
from colmena.http.console.static import STATIC
from colmena.http.middlewares import TRUSTED_PROXIES

PREFIX = "/console"
LOGIN_PATH = PREFIX + "/login"
COOKIE_PATH = PREFIX
SESSION_COOKIE = "colmena_console"
# The login form's CSRF token before any session exists (double submit: cookie and field).
PRE_SESSION_COOKIE = "colmena_console_csrf"
NOTICE_COOKIE = "colmena_console_notice"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
CURSOR_PARAM = "cursor"
MAX_NOTICE = 300

T = TypeVar("T")


@dataclass(frozen=True)
class Viewer:
    """Who is signed in: an operator (`name` is the admin's name, or `token` for a session
    opened with the admin token) or a tenant (`name` and `tenant_id` are the tenant's id)."""

    kind: Literal["admin", "tenant"]
    name: str
    tenant_id: str | None
    session_id: str
    csrf_token: str
    language: Language

    @property
    def audit_actor(self) -> str:
        """What `store.audit.attribute(conn, actor=...)` records for this viewer."""
        return f"admin:{self.name}" if self.kind == "admin" else f"tenant:{self.tenant_id}"


class Clock:
    """The console's time (sessions' timeouts); tests put one of their own under CLOCK."""

    def now(self) -> datetime:
        return datetime.now(UTC)


VIEWER = web.RequestKey("console_viewer", Viewer)
CLOCK = web.AppKey("console_clock", Clock)
# The pre-session CSRF token of this request, once known (read from the cookie or made).
_PRE_SESSION_TOKEN = web.RequestKey("console_pre_session_token", str)
_NEW_PRE_SESSION_TOKEN = web.RequestKey("console_new_pre_session_token", bool)


class HtmlError(Exception):
    """`raise HtmlError(404, "No such payment")`: the console's error page with that status."""

    def __init__(
        self, status: int, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


# Language -------------------------------------------------------------------------------------


def language(request: web.Request) -> Language:
    viewer = request.get(VIEWER)
    return viewer.language if viewer is not None else request_language(request)


def translate(request: web.Request, text: str, *, console: web.Application | None = None) -> str:
    """`text` (an English source string) in the request's language (`console`: as in
    `render`)."""
    catalog = (request.config_dict if console is None else console)[CATALOG]
    return translated(catalog, language(request), text)


# Cookies and tokens ---------------------------------------------------------------------------


def is_https(request: web.Request) -> bool:
    """TLS to this process, or to a trusted proxy that says so in X-Forwarded-Proto (the
    right-most value is the one the nearest proxy wrote)."""
    if request.secure:
        return True
    proto = request.headers.get("X-Forwarded-Proto", "")
    if not proto or request.remote is None:
        return False
    try:
        peer = ipaddress.ip_address(request.remote)
    except ValueError:
        return False
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped
    trusted = request.config_dict.get(TRUSTED_PROXIES, ())
    if not any(peer.version == net.version and peer in net for net in trusted):
        return False
    return proto.split(",")[-1].strip().lower() == "https"


def set_cookie(
    request: web.Request,
    response: web.StreamResponse,
    name: str,
    value: str,
    *,
    max_age: int | None = None,
    samesite: str = "Strict",
) -> None:
    """A console cookie: HttpOnly, path /console, SameSite=Strict, Secure over HTTPS."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        secure=is_https(request),
        samesite=samesite,
    )


def delete_cookie(response: web.StreamResponse, name: str) -> None:
    response.del_cookie(name, path=COOKIE_PATH)


def pre_session_token(request: web.Request) -> str:
    """The double-submit token of a browser with no session (made on first use)."""
    if _PRE_SESSION_TOKEN not in request:
        given = request.cookies.get(PRE_SESSION_COOKIE, "")
        request[_NEW_PRE_SESSION_TOKEN] = not (32 <= len(given) <= 64 and given.isascii())
        request[_PRE_SESSION_TOKEN] = new_secret() if request[_NEW_PRE_SESSION_TOKEN] else given
    return request[_PRE_SESSION_TOKEN]


def csrf_token(request: web.Request) -> str:
    """The token this request's forms must carry: the session's, else the pre-session one."""
    viewer = request.get(VIEWER)
    return viewer.csrf_token if viewer is not None else pre_session_token(request)


def _notice(request: web.Request) -> str | None:
    raw = request.cookies.get(NOTICE_COOKIE)
    if not raw:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    return text[:MAX_NOTICE] or None


# Rendering ------------------------------------------------------------------------------------


def page_url(request: web.Request, cursor: str | None) -> str:
    """This page's URL with its other query parameters and `cursor` (none: the first page)."""
    query = MultiDict(request.query)
    query.popall(CURSOR_PARAM, None)
    if cursor is not None:
        query[CURSOR_PARAM] = cursor
    return str(request.rel_url.with_query(query))


def render(
    request: web.Request,
    template: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    console: web.Application | None = None,
) -> web.Response:
    """`template` with `context` plus what every console page uses: `viewer`, `csrf_token`,
    `_` (translation), `lang`, `notice`, `static_tag`, `static_url`, `page_url`, `request`.

    `console` is the console sub-app, given only where the request is not (yet) inside it: a
    refusal by the ingress's own middlewares, which still answers with a console page."""
    config: Mapping[Any, Any] = request.config_dict if console is None else console
    lang = language(request)
    catalog = config[CATALOG]
    static = config[STATIC]
    notice = _notice(request)

    def _(text: str) -> str:
        return translated(catalog, lang, text)

    full = {
        "viewer": request.get(VIEWER),
        "csrf_token": csrf_token(request),
        "_": _,
        "lang": lang,
        "notice": _(notice) if notice else None,
        "static_tag": static.tag,
        "static_url": static.url,
        "page_url": lambda cursor: page_url(request, cursor),
        "request": request,
        **context,
    }
    if console is None:
        response = aiohttp_jinja2.render_template(template, request, full, status=status)
    else:
        page = aiohttp_jinja2.get_env(console).get_template(template).render(full)
        response = web.Response(text=page, status=status, content_type="text/html")
    if notice is not None:
        delete_cookie(response, NOTICE_COOKIE)
    if request.get(_NEW_PRE_SESSION_TOKEN):
        set_cookie(request, response, PRE_SESSION_COOKIE, request[_PRE_SESSION_TOKEN])
    return response


# Forms and answers ----------------------------------------------------------------------------


async def form(request: web.Request) -> MultiDictProxy[str]:
    """The POSTed form's text fields (files are not taken by console forms)."""
    posted = await request.post()
    return MultiDictProxy(MultiDict((k, v) for k, v in posted.items() if isinstance(v, str)))


def local_path(location: str) -> bool:
    """A path of the console (no scheme, host or protocol-relative trick): safe to redirect to."""
    if not location.startswith(PREFIX) or "\\" in location or location.startswith("//"):
        return False
    parts = urlsplit(location)
    return (
        not parts.scheme
        and not parts.netloc
        and (parts.path == PREFIX or parts.path.startswith(PREFIX + "/"))
    )


def see_other(request: web.Request, location: str, *, notice: str | None = None) -> web.Response:
    """303 to `location` (a console path); `notice` shows once on the next page."""
    if not local_path(location):
        raise ValueError(f"not a console path: {location!r}")
    response = web.Response(status=303, headers={"Location": location})
    if notice:
        encoded = base64.urlsafe_b64encode(notice[:MAX_NOTICE].encode("utf-8")).decode("ascii")
        set_cookie(request, response, NOTICE_COOKIE, encoded.rstrip("="))
    return response


def confirmation(
    request: web.Request,
    form: MultiDictProxy[str],
    *,
    message: str,
    cancel_to: str | None = None,
) -> web.Response | None:
    """None when the form says `confirmed=yes`; otherwise a page asking to confirm `message`,
    whose form posts the same fields again, with `confirmed=yes`, to the same URL."""
    if form.get("confirmed") == "yes":
        return None
    fields = [(k, v) for k, v in form.items() if k not in (CSRF_FIELD, "confirmed")]
    back = cancel_to if cancel_to is not None and local_path(cancel_to) else PREFIX + "/"
    context = {
        "message": translate(request, message),
        "fields": fields,
        "action": request.path_qs,
        "cancel_to": back,
    }
    return render(request, "console/confirm.html", context)


# Pagination -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a keyset-paginated list; `next_cursor` is None on the last."""

    items: Sequence[T]
    next_cursor: str | None = None


CursorValue = str | int | datetime | Decimal | uuid.UUID | None


def page_cursor(request: web.Request) -> str | None:
    """Where this page starts (the `cursor` query parameter), None for the first page."""
    return request.query.get(CURSOR_PARAM) or None


def _tagged(value: CursorValue) -> Any:
    if isinstance(value, datetime):
        return {"t": value.isoformat()}
    if isinstance(value, Decimal):
        return {"d": str(value)}
    if isinstance(value, uuid.UUID):
        return {"u": str(value)}
    return value


def _untagged(value: Any) -> CursorValue:
    if isinstance(value, dict) and len(value) == 1:
        ((tag, text),) = value.items()
        if tag == "t":
            return datetime.fromisoformat(text)
        if tag == "d":
            return Decimal(text)
        if tag == "u":
            return uuid.UUID(text)
        raise ValueError(tag)
    if value is None or isinstance(value, str | int):
        return value
    raise ValueError("unexpected value")


def encode_cursor(*values: CursorValue) -> str:
    """An opaque url-safe cursor for the last row shown, e.g. (created_at, id)."""
    text = json.dumps([_tagged(v) for v in values], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, arity: int) -> tuple[CursorValue, ...]:
    """The values `encode_cursor` was given; a cursor not made by it is a 400 page."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
        if not isinstance(values, list) or len(values) != arity:
            raise ValueError("wrong arity")
        return tuple(_untagged(v) for v in values)
    except (ValueError, TypeError, binascii.Error, ArithmeticError):
        raise HtmlError(400, "That page link is not valid") from None
