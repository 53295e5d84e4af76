"""Signed webhooks to tenants' own servers, in the Standard Webhooks scheme (as Svix sends them).

Each request carries `webhook-id` (the delivery's id: the same on every retry and replay, so a
receiver can drop duplicates), `webhook-timestamp` (Unix seconds of this attempt) and
`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed with the base64 part
of the tenant's `whsec_` secret. A receiver recomputes it over the raw body with a constant-time
comparison and refuses timestamps far from its clock.

A tenant's URL is someone else's server, so every connection is checked, not only the URL once:
the session's resolver drops every address `address_allowed` refuses (a name that resolves, or
later re-resolves, to a private, loopback or link-local address reaches nothing), IP literals
(which skip the resolver) are checked before sending, redirects are not followed and no proxy
from the environment is used. Connect and total timeouts are short settings, and the answer's
body is never read beyond a small prefix.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from colmena.config.notify_settings import Network
from colmena.config.settings import Settings
from colmena.config.shared_client import SharedClient
from colmena.domain.notifications import address_allowed

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
SIGNATURE_VERSION = "v1"
USER_AGENT = "colmena-webhooks/1"


class DestinationRefused(OSError):
    """Every address of the host is one deliveries may not reach (SSRF rule): permanent."""


@dataclass(frozen=True)
class Attempt:
    """What one attempt came to: `ok`, or why not and whether trying again can help."""

    ok: bool
    status: int | None = None
    error: str | None = None
    permanent: bool = False
    retry_after_s: float | None = None


def new_secret() -> str:
    """A fresh signing secret, `whsec_` and 32 random bytes in base64 (Standard Webhooks form)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256>` of `msg_id.timestamp.body` keyed by the secret's bytes."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, msg_id, timestamp, body),
    }


class GuardedResolver(AbstractResolver):
    """The default resolver, minus every address deliveries may not reach."""

    def __init__(self, allowed: Iterable[Network]) -> None:
        self._inner = DefaultResolver()
        self._allowed = tuple(allowed)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        kept = [
            result
            for result in found
            if address_allowed(ipaddress.ip_address(result["host"]), self._allowed)
        ]
        if not kept:
            raise DestinationRefused(f"{host} resolves only to addresses deliveries may not reach")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def guarded_session(settings: Settings) -> aiohttp.ClientSession:
    """A session for tenants' endpoints: guarded resolver, short timeouts, no env proxies."""
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(settings.notify_networks()), limit=0, use_dns_cache=False
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(
            total=settings.notify_timeout_s, sock_connect=settings.notify_connect_timeout_s
        ),
        trust_env=False,
    )


async def _close(session: aiohttp.ClientSession) -> None:
    await session.close()


WEBHOOK_SESSION: SharedClient[aiohttp.ClientSession] = SharedClient(
    "tenant-webhooks", guarded_session, _close
)


def literal_refused(url: str, allowed: Iterable[Network]) -> bool:
    """Whether the URL's host is an IP literal deliveries may not reach (those skip resolving)."""
    host = URL(url).host or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not address_allowed(address, allowed)


def _refused(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DestinationRefused):
            return True
        seen = getattr(seen, "os_error", None) or seen.__cause__
    return False


async def send(
    session: aiohttp.ClientSession,
    url: str,
    *,
    secret: str,
    msg_id: str,
    timestamp: int,
    body: bytes,
    allowed: Iterable[Network],
) -> Attempt:
    """POST one signed delivery. 2xx is delivered; anything else is retried (Standard Webhooks'
    receivers answer 2xx when they took it), except a destination the SSRF rule refuses."""
    if literal_refused(url, allowed):
        return Attempt(False, error="destination address not allowed", permanent=True)
    try:
        async with session.post(
            url,
            data=body,
            headers=headers(secret, msg_id, timestamp, body),
            allow_redirects=False,
        ) as response:
            if 200 <= response.status < 300:
                return Attempt(True, status=response.status)
            return Attempt(False, status=response.status, error=f"HTTP {response.status}")
    except TimeoutError:
        return Attempt(False, error="timed out")
    except aiohttp.ClientError as exc:
        if _refused(exc):
            return Attempt(False, error="destination address not allowed", permanent=True)
        return Attempt(False, error=f"{type(exc).__name__}")


def payload(
    *, event_id: str, kind: str, tenant_id: str, occurred_at: str, data: dict[str, Any]
) -> dict[str, Any]:
    """The JSON body: Standard Webhooks' recommended `type`/`timestamp`/`data` plus the ids."""
    return {
        "id": event_id,
        "type": kind,
        "timestamp": occurred_at,
        "tenant": tenant_id,
        "data": data,
    }
