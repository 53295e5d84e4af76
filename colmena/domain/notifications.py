"""Tenant notifications' rules: which events there are, what a tenant may register, what it reads.

Pure: the ingress checks a registration with these rules, the delivery gateways check every
address they connect to with `address_allowed`, and the actor words a Telegram message with
`telegram_text`. A webhook URL is checked here by its text only (no DNS lookup on the ingress):
a name's addresses can change after registration, so the check that protects the private
network is the one made on every connection (colmena.gateways.tenant_webhooks).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

EVENT_KINDS = (
    "bot.started",
    "bot.stopped",
    "bot.crashed",
    "bot.crashloop",
    "bot.unhealthy",
    "plan.changed",
)
CHANNELS = ("telegram", "webhook")
DELIVERY_STATES = ("pending", "in_flight", "delivered", "dead")

MAX_URL_CHARS = 2048
# The one syntax the API accepts (the OpenAPI document carries the same pattern): lower-case
# DNS names or dotted IPv4, an optional port 1-65535, a path and query of plain URL characters.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_PATH_CHARS = r"[A-Za-z0-9._~!$&'()*+,;=:@/-]"
WEBHOOK_URL_PATTERN = (
    rf"^https?://{_LABEL}(?:\.{_LABEL})*(?::{_PORT})?(?:/{_PATH_CHARS}*)?(?:\?{_PATH_CHARS}*)?$"
)
_WEBHOOK_URL = re.compile(WEBHOOK_URL_PATTERN)
# A channel's or supergroup's public name, as Telegram's sendMessage takes it.
TELEGRAM_USERNAME_PATTERN = r"^@[A-Za-z][A-Za-z0-9_]{4,31}$"
_TELEGRAM_USERNAME = re.compile(TELEGRAM_USERNAME_PATTERN)
MAX_CHAT_ID = 10**15  # Telegram's chat ids fit in 52 bits

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class RegistrationError(ValueError):
    """A registration the API refuses; `forbidden` marks a destination refused by policy (403)
    rather than a malformed value (422)."""

    def __init__(self, field: str, message: str, *, forbidden: bool = False) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.forbidden = forbidden


def address_allowed(address: Address, allowed: Iterable[Network] = ()) -> bool:
    """Whether a delivery may connect to `address`: a public unicast address, or one inside a
    network the operator allow-listed. Loopback, private, link-local (cloud metadata),
    multicast, reserved and unspecified addresses are refused."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in allowed if network.version == address.version):
        return True
    return address.is_global and not address.is_multicast


def check_webhook_url(url: Any, *, allow_http: bool, allowed: Iterable[Network] = ()) -> str:
    """The URL to store, or RegistrationError.

    https only (http only with `allow_http`), no credentials, fragments or odd characters (the
    pattern), and an IP literal must pass `address_allowed`; so must the name `localhost`.
    """
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS or not _WEBHOOK_URL.fullmatch(url):
        raise RegistrationError(
            "url",
            f"an https:// URL of up to {MAX_URL_CHARS} characters: lower-case host name or IPv4 "
            "address, optional port, path and query of plain URL characters",
        )
    parts = urlsplit(url)
    if parts.scheme != "https" and not allow_http:
        raise RegistrationError("url", "webhooks are delivered over https only")
    host = parts.hostname or ""
    networks = tuple(allowed)
    try:
        literal: Address | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None and not address_allowed(literal, networks):
        raise RegistrationError(
            "url", "that address is private, loopback or link-local", forbidden=True
        )
    if literal is None and (host == "localhost" or host.endswith(".localhost")):
        loopback = ipaddress.ip_address("127.0.0.1")
        if not address_allowed(loopback, networks):
            raise RegistrationError("url", "localhost is not a webhook destination", forbidden=True)
    return url


def check_chat_id(value: Any) -> str:
    """A Telegram chat id (an integer, negative for groups and channels) or a public @username,
    as text for storage; RegistrationError otherwise. JSON 12.0 is the integer 12."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if -MAX_CHAT_ID <= value <= MAX_CHAT_ID:
            return str(value)
    elif isinstance(value, str) and _TELEGRAM_USERNAME.fullmatch(value):
        return value
    raise RegistrationError(
        "chat_id",
        f"an integer chat id (between -{MAX_CHAT_ID} and {MAX_CHAT_ID}) or an @channelusername "
        "of 5 to 32 letters, digits and _",
    )


def chat_for_api(stored: str) -> int | str:
    """The chat id as Telegram's JSON takes it: numbers as numbers."""
    return stored if stored.startswith("@") else int(stored)


_HEADLINES = {
    "bot.started": "your bot started",
    "bot.stopped": "your bot stopped",
    "bot.crashed": "your bot crashed",
    "bot.crashloop": "your bot keeps crashing: colmena stopped restarting it",
    "bot.unhealthy": "your bot stopped sending heartbeats",
    "plan.changed": "your plan changed",
}


def telegram_text(kind: str, tenant_id: str, data: Mapping[str, Any]) -> str:
    """One plain-text message (no markup: nothing in it needs escaping) for a Telegram chat."""
    lines = [f"colmena ({tenant_id}): {_HEADLINES.get(kind, kind)}"]
    if kind == "plan.changed":
        lines.append(f"plan: {data.get('from')} -> {data.get('to')}")
    elif data.get("reason"):
        lines.append(str(data["reason"]))
    return "\n".join(lines)[:4096]  # sendMessage's limit


# What a webhook's sealed secret is bound to besides its tenant (colmena.domain.key_sealing's
# associated data), so a sealed provider key can never pass for a webhook secret or back.
SECRET_SEAL_LABEL = "notify_webhook"
