"""Which mailer sends the customers' emails (license links, invoices), from settings.

SMTP when COLMENA_SMTP_HOST is set; in `colmena dev` without one, .eml files under
``<COLMENA_DATA_DIR>/mail``. Both actors that send mail take the process's one mailer from
`Resources.shared(MAILER)`, so neither owns it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from colmena.config import Settings
from colmena.config.shared_client import SharedClient
from colmena.errors import PermanentError
from colmena.gateways.mail import Attachment, RenderedEmail, SmtpMailer
from colmena.gateways.maildrop import MailDropMailer


class Mailer(Protocol):
    async def send_email(
        self, to: str, email: RenderedEmail, attachments: Sequence[Attachment] = ()
    ) -> str: ...


class MailerNotConfigured(PermanentError):
    """No SMTP server is configured outside `colmena dev`."""

    hint = "customer emails need an SMTP server: set COLMENA_SMTP_HOST (`colmena check` lists it)"


def mailer_for(settings: Settings) -> Mailer:
    if settings.smtp_host:
        return SmtpMailer(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_sender,
            starttls=settings.smtp_starttls,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            timeout=settings.smtp_timeout_s,
        )
    if settings.env == "dev":
        return MailDropMailer(Path(settings.data_dir, "mail"), sender=settings.smtp_sender)
    raise MailerNotConfigured("COLMENA_SMTP_HOST is not set: customer emails cannot be sent")


async def close_mailer(mailer: Mailer) -> None:
    """SMTP sessions kept open are closed with the process; a mail drop holds nothing."""
    if isinstance(mailer, SmtpMailer):
        await mailer.close()


MAILER: SharedClient[Mailer] = SharedClient("mailer", mailer_for, close_mailer)
