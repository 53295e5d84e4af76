"""What the account tests share: settings with a cheap argon2id cost and the SMTP stand-in,
clients seen from an address of their choice, and the links the emails carry."""

from __future__ import annotations

import re
from typing import Any

from colmena.config import Settings
from tests.standins.smtp import ReceivedMail, SmtpStandin

PASSWORD = "correct horse battery"
# Cheap enough for tests (8 MiB, one pass), and unlike the defaults, so a test can tell the
# stored hash was made with the configured cost.
COST = {
    "accounts_argon2_time_cost": 1,
    "accounts_argon2_memory_kib": 8192,
    "accounts_argon2_parallelism": 1,
}
_LINK = re.compile(r"https?://\S+/api/v1/(verify|password/reset)/(cml_[A-Za-z0-9_-]{43})")


def accounts_settings(settings: Settings, smtp: SmtpStandin, **overrides: Any) -> Settings:
    """The test's settings, mail through `smtp`, the loopback trusted as a proxy (so each
    request may say which client it comes from, in X-Forwarded-For)."""
    values: dict[str, Any] = {
        "smtp_host": smtp.host,
        "smtp_port": smtp.port,
        "smtp_starttls": False,
        "trusted_proxies": "127.0.0.1",
        **COST,
        **overrides,
    }
    return settings.model_copy(update=values)


def from_client(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def link_in(mail: ReceivedMail) -> tuple[str, str]:
    """(kind, token) of the one link in an email's text part; the HTML carries the same."""
    body = mail.message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    found = _LINK.findall(text)
    assert len(found) == 1, text
    html = mail.message.get_body(("html",))
    assert html is not None and found[0][1] in html.get_content()
    return found[0][0], found[0][1]


def mails_to(smtp: SmtpStandin, address: str) -> list[ReceivedMail]:
    return [mail for mail in smtp.messages if mail.rcpt_tos == [address]]
