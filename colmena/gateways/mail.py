"""Outgoing email over SMTP (aiosmtplib), and the license-delivery templates.

Every failure to hand a message to the server becomes one ``MailDeliveryError`` that says
whether trying again can help, so callers decide between retry and dead letter without
knowing aiosmtplib's exception tree.
"""

from __future__ import annotations

import html
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit

import aiosmtplib
import structlog
from aiosmtplib import SMTPStatus

from colmena.errors import ColmenaError
from colmena.gateways.mime import Attachment, Composer, OutgoingMail
from colmena.gateways.smtp_sessions import IdleSessions

log = structlog.get_logger(__name__)

Language = Literal["es", "en"]


class MailDeliveryError(ColmenaError):
    """The server did not accept the message.

    ``retryable`` is False when resending the same message cannot succeed (5xx replies,
    rejected credentials, STARTTLS required but not offered); connection failures,
    timeouts and 4xx replies are temporary. The worker's retry policy reads it as it is.
    """

    def __init__(self, message: str, *, code: int | None = None, retryable: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


class _StartTlsUnavailable(Exception):
    pass


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


class SmtpMailer:
    """Hands messages to one SMTP server, keeping sessions open between them
    (`smtp_sessions`): a session that delivered is reused, one that failed is closed.

    Messages are built as bytes by `mime.Composer` and sent with aiosmtplib's MAIL, RCPT and
    DATA, so nothing is parsed or flattened again on the way out."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        local_hostname: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("SMTP username and password go together")
        self.host = host
        self.port = port
        self.sender = sender
        self.starttls = starttls
        self.timeout = timeout
        self._username = username
        self._password = password
        self._composer = Composer(sender)
        # Passed explicitly: aiosmtplib's default, socket.getfqdn(), can stall on DNS.
        self._local_hostname = local_hostname or self._composer.domain
        self._tls_context = tls_context
        self.sessions = IdleSessions()

    def __repr__(self) -> str:
        return f"SmtpMailer(host={self.host!r}, port={self.port}, starttls={self.starttls})"

    def compose(
        self, to: str, email: RenderedEmail, attachments: Sequence[Attachment] = ()
    ) -> OutgoingMail:
        return self._composer.compose(
            to=to, subject=email.subject, text=email.text, html=email.html, attachments=attachments
        )

    async def send(self, mail: OutgoingMail) -> str:
        """Hand ``mail`` to the server; returns its Message-ID once accepted."""
        message_id = mail.message_id
        try:
            refused = await self._deliver(mail)
        except _StartTlsUnavailable as exc:
            raise _failure(str(exc), code=None, message_id=message_id, permanent=True) from exc
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            raise _failure(
                "recipients refused", code=max(codes, default=None), message_id=message_id
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            reason = f"server replied {exc.code}"
            raise _failure(reason, code=exc.code, message_id=message_id) from exc
        except aiosmtplib.SMTPTimeoutError as exc:
            raise _failure("timed out", code=None, message_id=message_id) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise _failure(f"connection failed: {exc}", code=None, message_id=message_id) from exc
        if refused:
            log.warning(
                "mail_partially_refused",
                message_id=message_id,
                refused_codes=sorted(r.code for r in refused.values()),
            )
        # DEBUG: each caller logs the sent Message-ID with what the email was for (an INFO line
        # here cost a worker ~50 µs per email and said less).
        log.debug("mail_sent", message_id=message_id, host=self.host, port=self.port)
        return message_id

    async def _deliver(self, mail: OutgoingMail) -> dict[str, aiosmtplib.SMTPResponse]:
        client = await self._session_with_mail_from(mail)
        try:
            refused = await _recipients_and_data(client, mail)
        except BaseException:
            client.close()  # whatever state the session is in, it is not reused
            raise
        if not self.sessions.give_back(client):
            await client.quit()
        return refused

    async def _session_with_mail_from(self, mail: OutgoingMail) -> aiosmtplib.SMTP:
        """A session whose server accepted this message's MAIL FROM.

        An idle session is tried first, its MAIL command doubling as the liveness check (no
        NOOP round trip per message): if the server dropped the session meanwhile, it is no
        longer connected once MAIL fails, nothing of the message has gone out, and a fresh
        session carries it instead. A refusal on a session still connected is the server's
        answer and is raised."""
        reused = self.sessions.take()
        if reused is not None:
            try:
                await _mail_from(reused, mail)
            except BaseException as exc:
                dropped = isinstance(exc, aiosmtplib.SMTPException | OSError)
                dropped = dropped and not reused.is_connected
                reused.close()
                if not dropped:
                    raise
            else:
                return reused
        client = await self._open_session()
        try:
            await _mail_from(client, mail)
        except BaseException:
            client.close()
            raise
        return client

    async def _open_session(self) -> aiosmtplib.SMTP:
        """Step by step rather than ``aiosmtplib.send`` so that a server not offering
        STARTTLS is told apart from other errors: it is a configuration fault, and the
        message must never go out in clear text instead."""
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            timeout=self.timeout,
            local_hostname=self._local_hostname,
            start_tls=False,
        )
        await client.connect()
        try:
            if self.starttls:
                await client.ehlo()
                if not client.supports_extension("starttls"):
                    raise _StartTlsUnavailable("STARTTLS required but not offered by the server")
                await client.starttls(tls_context=self._tls_context)
            if self._username is not None and self._password is not None:
                await client.login(self._username, self._password)
            if client.is_ehlo_or_helo_needed:  # `_mail_from` reads the extensions
                await _hello(client)
        except BaseException:
            client.close()
            raise
        return client

    async def close(self) -> None:
        """QUIT the sessions kept open (on shutdown)."""
        await self.sessions.close()

    async def send_email(
        self, to: str, email: RenderedEmail, attachments: Sequence[Attachment] = ()
    ) -> str:
        return await self.send(self.compose(to, email, attachments))


async def _mail_from(client: aiosmtplib.SMTP, mail: OutgoingMail) -> None:
    """MAIL FROM, asking for SMTPUTF8 when an address needs it (refused if not offered).

    Through ``execute_command`` rather than ``SMTP.mail``, which parses the address again
    with the email package; `mime.Composer` made it, and aiosmtplib still refuses line
    breaks in any command."""
    options: list[bytes] = []
    if mail.smtputf8:
        if not client.supports_extension("smtputf8"):
            raise aiosmtplib.SMTPNotSupported("an address is not ASCII and SMTPUTF8 is not offered")
        options.append(b"SMTPUTF8")
        if client.supports_extension("8bitmime"):
            options.append(b"BODY=8BITMIME")
    address = b"FROM:<" + mail.sender.encode(_encoding(mail)) + b">"
    response = await client.execute_command(b"MAIL", address, *options)
    if response.code != SMTPStatus.completed:
        raise aiosmtplib.SMTPSenderRefused(response.code, response.message, mail.sender)


async def _recipients_and_data(
    client: aiosmtplib.SMTP, mail: OutgoingMail
) -> dict[str, aiosmtplib.SMTPResponse]:
    """RCPT TO for each recipient, then DATA; the refused recipients when some were (all
    refused raises ``SMTPRecipientsRefused``, as aiosmtplib's ``sendmail`` does)."""
    refusals: list[aiosmtplib.SMTPRecipientRefused] = []
    for recipient in mail.recipients:
        address = b"TO:<" + recipient.encode(_encoding(mail)) + b">"
        response = await client.execute_command(b"RCPT", address)
        if response.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
            refusals.append(
                aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)
            )
    if len(refusals) == len(mail.recipients):
        raise aiosmtplib.SMTPRecipientsRefused(refusals)
    await client.data(mail.data)
    return {r.recipient: aiosmtplib.SMTPResponse(r.code, r.message) for r in refusals}


async def _hello(client: aiosmtplib.SMTP) -> None:
    """EHLO, or HELO for a server that refuses EHLO (as aiosmtplib's own commands do)."""
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        if not client.is_connected:
            raise
        await client.helo()


def _encoding(mail: OutgoingMail) -> str:
    return "utf-8" if mail.smtputf8 else "ascii"


def _failure(
    reason: str, *, code: int | None, message_id: str, permanent: bool | None = None
) -> MailDeliveryError:
    if permanent is None:
        permanent = code is not None and 500 <= code < 600
    log.warning(
        "mail_delivery_failed", message_id=message_id, reason=reason, code=code, permanent=permanent
    )
    return MailDeliveryError(f"SMTP delivery failed: {reason}", code=code, retryable=not permanent)


def _one_line(value: str) -> str:
    """Header values must not carry line breaks (header injection); collapse all whitespace."""
    return re.sub(r"\s+", " ", value).strip()


# --- License delivery templates -------------------------------------------------------------

_MONTHS: dict[Language, tuple[str, ...]] = {
    "es": (
        "enero", "febrero", "marzo", "abril", "mayo", "junio",
        "julio", "agosto", "septiembre", "octubre", "noviembre", "diciembre",
    ),
    "en": (
        "January", "February", "March", "April", "May", "June",
        "July", "August", "September", "October", "November", "December",
    ),
}  # fmt: skip

_LICENSE_STRINGS: dict[Language, dict[str, str]] = {
    "es": {
        "subject": "Tu licencia de {product} está lista",
        "greeting": "Hola:",
        "intro": "Gracias por tu compra ({amount}). Tu licencia de {product} está lista para "
        "descargar.",
        "button": "Descargar {product}",
        "link_expiry_one": "El enlace vence el {when} y sirve para una sola descarga.",
        "link_expiry_many": "El enlace vence el {when} y sirve para {count} descargas.",
        "license_expiry": "La licencia vence el {when}.",
        "perpetual": "La licencia es perpetua.",
        "help": "Si el enlace vence antes de que lo uses, responde a este correo y te enviaremos"
        " uno nuevo.",
        "date": "{day} de {month} de {year}, {time} UTC",
    },
    "en": {
        "subject": "Your {product} license is ready",
        "greeting": "Hello,",
        "intro": "Thank you for your purchase ({amount}). Your {product} license is ready to "
        "download.",
        "button": "Download {product}",
        "link_expiry_one": "The link expires on {when} and works for a single download.",
        "link_expiry_many": "The link expires on {when} and works for {count} downloads.",
        "license_expiry": "The license expires on {when}.",
        "perpetual": "The license is perpetual.",
        "help": "If the link expires before you use it, reply to this email and we will send"
        " you a new one.",
        "date": "{day} {month} {year}, {time} UTC",
    },
}


def language_for(locale: str | None) -> Language:
    """Spanish for any ``es`` locale (``es``, ``es-VE``, ``es_MX.UTF-8``), English otherwise."""
    if locale and re.match(r"es(?:$|[-_.@])", locale.strip(), re.IGNORECASE):
        return "es"
    return "en"


def license_delivery_email(
    *,
    locale: str | None,
    product_name: str,
    amount: str,
    download_url: str,
    link_expires_at: datetime,
    license_expires_at: datetime | None,
    max_downloads: int = 1,
) -> RenderedEmail:
    """Subject, plain text and HTML for a download link; ``amount`` is what was paid, as
    `colmena.domain.money.format_money` writes it; ``license_expires_at`` None means perpetual.
    Every value placed into the HTML is escaped."""
    scheme = urlsplit(download_url).scheme
    if scheme not in ("https", "http"):
        raise ValueError("download_url must be an http(s) URL")
    lang = language_for(locale)
    s = _LICENSE_STRINGS[lang]
    link_when = _format_when(link_expires_at, lang)
    link_line = (
        s["link_expiry_one"].format(when=link_when)
        if max_downloads == 1
        else s["link_expiry_many"].format(when=link_when, count=max_downloads)
    )
    license_line = (
        s["perpetual"]
        if license_expires_at is None
        else s["license_expiry"].format(when=_format_when(license_expires_at, lang))
    )
    product = _one_line(product_name)
    intro = s["intro"].format(product=product, amount=_one_line(amount))
    text = (
        "\n\n".join(
            [
                s["greeting"],
                intro,
                download_url,
                link_line,
                license_line,
                s["help"],
            ]
        )
        + "\n"
    )
    e = html.escape
    html_body = (
        f'<!DOCTYPE html>\n<html lang="{lang}">\n<head><meta charset="utf-8">'
        f"<title>{e(s['subject'].format(product=product))}</title></head>\n"
        '<body style="font-family: sans-serif; line-height: 1.5;">\n'
        f"<p>{e(s['greeting'])}</p>\n"
        f"<p>{e(intro)}</p>\n"
        f'<p><a href="{e(download_url)}" style="display: inline-block; padding: 10px 18px;'
        ' background: #1a56db; color: #ffffff; text-decoration: none; border-radius: 4px;">'
        f"{e(s['button'].format(product=product))}</a></p>\n"
        f"<p>{e(link_line)}<br>{e(license_line)}</p>\n"
        f"<p>{e(s['help'])}</p>\n"
        "</body>\n</html>\n"
    )
    return RenderedEmail(subject=s["subject"].format(product=product), text=text, html=html_body)


def _format_when(value: datetime, lang: Language) -> str:
    if value.tzinfo is None:
        raise ValueError("expiry times must be timezone-aware")
    utc = value.astimezone(UTC)
    return _LICENSE_STRINGS[lang]["date"].format(
        day=utc.day, month=_MONTHS[lang][utc.month - 1], year=utc.year, time=utc.strftime("%H:%M")
    )
