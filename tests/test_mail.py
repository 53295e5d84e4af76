"""Mail through a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from colmena.errors import is_permanent
from colmena.gateways.mail import (
    Attachment,
    MailDeliveryError,
    SmtpMailer,
    language_for,
    license_delivery_email,
)
from colmena.gateways.smtp_sessions import IdleSessions
from tests.standins.smtp import SmtpStandin, free_port

SENDER = "licencias@colmena.example"
LINK_EXPIRES = datetime(2025, 3, 4, 15, 30, tzinfo=UTC)
LICENSE_EXPIRES = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
URL = "https://colmena.example/downloads/abc123"


class ScriptedStandin(SmtpStandin):
    """The stand-in, answering the next MAIL commands with ``mail_replies`` (in order) and
    every RCPT with ``rcpt_reply`` when set; it counts MAIL and NOOP commands, and keeps the
    session of each MAIL it accepted (alive, so no two sessions can share an ``id``, as a
    closed one's could with a later one's)."""

    def __init__(self) -> None:
        super().__init__()
        self.mail_replies: list[str] = []
        self.rcpt_reply: str | None = None
        self.mail_commands = 0
        self.noops = 0
        self.mail_sessions: list[Session] = []

    def connections(self) -> int:
        """How many sessions carried the MAIL commands accepted so far."""
        return len({id(session) for session in self.mail_sessions})

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.mail_commands += 1
        if self.mail_replies:
            return self.mail_replies.pop(0)
        self.mail_sessions.append(session)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_NOOP(
        self, server: SMTP, session: Session, envelope: Envelope, arg: str
    ) -> str:
        self.noops += 1
        return "250 OK"


@pytest.fixture
def scripted():
    with ScriptedStandin() as server:
        yield server


@pytest.fixture
def smtp():
    with SmtpStandin() as server:
        yield server


def mailer_for(server: SmtpStandin, **kwargs) -> SmtpMailer:
    return SmtpMailer(host=server.host, port=server.port, sender=SENDER, timeout=5.0, **kwargs)


def delivery(locale: str | None, product: str = "Colmena Industrial"):
    return license_delivery_email(
        locale=locale,
        product_name=product,
        amount="1,500.00 MXN",
        download_url=URL,
        link_expires_at=LINK_EXPIRES,
        license_expires_at=LICENSE_EXPIRES,
    )


def parts(message):
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    return text, html


async def test_spanish_email_arrives_with_both_parts(smtp):
    message_id = await mailer_for(smtp).send_email("ana@example.com", delivery("es-VE"))

    [received] = await smtp.wait_for_async(1)
    assert received.mail_from == SENDER and received.rcpt_tos == ["ana@example.com"]
    message = received.message
    assert message["Message-ID"] == message_id
    assert message["Subject"] == "Tu licencia de Colmena Industrial está lista"
    assert message.get_content_type() == "multipart/alternative"
    text, html = parts(message)
    assert URL in text and "4 de marzo de 2025, 15:30 UTC" in text
    assert "Gracias por tu compra (1,500.00 MXN)." in text and "(1,500.00 MXN)" in html
    assert "una sola descarga" in text and "1 de marzo de 2026" in text
    assert f'href="{URL}"' in html and 'lang="es"' in html


async def test_english_email_for_other_locales(smtp):
    await mailer_for(smtp).send_email("bob@example.com", delivery("en-US"))
    [received] = await smtp.wait_for_async(1)
    assert received.message["Subject"] == "Your Colmena Industrial license is ready"
    text, html = parts(received.message)
    assert "4 March 2025, 15:30 UTC" in text and 'lang="en"' in html
    assert "Thank you for your purchase (1,500.00 MXN)." in text


@pytest.mark.parametrize(
    ("locale", "language"),
    [
        ("es", "es"),
        ("es-MX", "es"),
        ("ES_ve.UTF-8", "es"),
        ("en-GB", "en"),
        ("pt-BR", "en"),
        (None, "en"),
        ("", "en"),
        ("est", "en"),
    ],
)
def test_language_choice(locale, language):
    assert language_for(locale) == language


async def test_hostile_product_name_is_escaped_and_kept_out_of_headers(smtp):
    hostile = 'Evil <script>alert("x")</script> & Co\r\nBcc: victim@example.com'
    rendered = delivery("en", product=hostile)
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Co" in rendered.html

    await mailer_for(smtp).send_email("ana@example.com", rendered)
    [received] = await smtp.wait_for_async(1)
    assert received.rcpt_tos == ["ana@example.com"]
    assert received.message["Bcc"] is None
    assert "\n" not in received.message["Subject"]
    _, html = parts(received.message)
    assert "<script>" not in html


def test_link_must_be_http():
    with pytest.raises(ValueError):
        license_delivery_email(
            locale="es",
            product_name="X",
            amount="1.00 USD",
            download_url="javascript:alert(1)",
            link_expires_at=LINK_EXPIRES,
            license_expires_at=None,
        )


async def test_attachments_travel_with_both_bodies(smtp):
    xml = b"<?xml version='1.0'?><cfdi:Comprobante/>"
    pdf = b"%PDF-1.7 fake but binary \x00\xff"
    rendered = license_delivery_email(
        locale="es",
        product_name="Factura",
        amount="1.00 USD",
        download_url=URL,
        link_expires_at=LINK_EXPIRES,
        license_expires_at=None,
        max_downloads=3,
    )
    await mailer_for(smtp).send_email(
        "ana@example.com",
        rendered,
        [
            Attachment("factura.xml", xml, "application/xml"),
            Attachment("factura.pdf", pdf, "application/pdf"),
        ],
    )
    [received] = await smtp.wait_for_async(1)
    message = received.message
    assert message.get_content_type() == "multipart/mixed"
    text, _ = parts(message)
    assert "3 descargas" in text and "perpetua" in text
    got = {a.get_filename(): a.get_content() for a in message.iter_attachments()}
    assert got == {"factura.xml": xml, "factura.pdf": pdf}


async def test_server_down_raises_typed_error_promptly():
    mailer = SmtpMailer(host="127.0.0.1", port=free_port(), sender=SENDER, timeout=5.0)
    started = time.monotonic()
    with pytest.raises(MailDeliveryError) as caught:
        await mailer.send_email("ana@example.com", delivery("es"))
    assert time.monotonic() - started < 2.0
    assert not is_permanent(caught.value) and caught.value.code is None


async def test_down_then_up_on_the_same_port(smtp):
    mailer = mailer_for(smtp)
    smtp.stop()
    with pytest.raises(MailDeliveryError):
        await mailer.send_email("ana@example.com", delivery("es"))
    smtp.start()
    await mailer.send_email("ana@example.com", delivery("es"))
    assert len(await smtp.wait_for_async(1)) == 1


@pytest.mark.parametrize(
    ("reply", "permanent"), [("451 4.3.0 try later", False), ("554 5.7.1 no", True)]
)
async def test_server_refusal_is_classified(smtp, reply, permanent):
    smtp.reply = reply
    with pytest.raises(MailDeliveryError) as caught:
        await mailer_for(smtp).send_email("ana@example.com", delivery("es"))
    assert caught.value.code == int(reply[:3])
    assert is_permanent(caught.value) is permanent
    assert smtp.messages == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_credentials_are_used_and_bad_ones_are_permanent():
    with SmtpStandin(credentials=("mailer", "s3cret")) as server:
        await mailer_for(server, username="mailer", password="s3cret").send_email(
            "ana@example.com", delivery("es")
        )
        assert len(await server.wait_for_async(1)) == 1
        with pytest.raises(MailDeliveryError) as caught:
            await mailer_for(server, username="mailer", password="wrong").send_email(
                "ana@example.com", delivery("es")
            )
        assert is_permanent(caught.value) and caught.value.code == 535
        assert "s3cret" not in repr(mailer_for(server, username="mailer", password="s3cret"))


async def test_starttls_required_but_not_offered_fails_instead_of_sending_in_clear(smtp):
    with pytest.raises(MailDeliveryError) as caught:
        await mailer_for(smtp, starttls=True).send_email("ana@example.com", delivery("es"))
    assert is_permanent(caught.value)
    assert smtp.messages == []


async def test_starttls_with_credentials_delivers_over_tls():
    with SmtpStandin(credentials=("mailer", "s3cret"), tls=True) as server:
        mailer = mailer_for(
            server,
            starttls=True,
            username="mailer",
            password="s3cret",
            tls_context=server.client_tls,
        )
        await mailer.send_email("ana@example.com", delivery("es"))
        [received] = await server.wait_for_async(1)
        assert received.rcpt_tos == ["ana@example.com"]


async def test_plain_sender_is_refused_by_a_starttls_only_server():
    with SmtpStandin(tls=True) as server:
        with pytest.raises(MailDeliveryError) as caught:
            await mailer_for(server).send_email("ana@example.com", delivery("es"))
        assert is_permanent(caught.value) and caught.value.code == 530
        assert server.messages == []


async def test_messages_share_one_session_and_shutdown_quits_it(smtp):
    mailer = mailer_for(smtp)
    for _ in range(3):
        await mailer.send_email("ana@example.com", delivery("es"))
    await smtp.wait_for_async(3)
    assert len(set(smtp.sessions)) == 1, "one connection carried the three messages"
    assert mailer.sessions.count() == 1
    await mailer.close()
    assert mailer.sessions.count() == 0


async def test_a_session_dropped_while_idle_is_replaced_and_nothing_is_lost(scripted):
    mailer = mailer_for(scripted)
    await mailer.send_email("ana@example.com", delivery("es"))
    scripted.stop()  # the server goes away with the idle session
    scripted.start()
    await mailer.send_email("ana@example.com", delivery("en"))
    received = await scripted.wait_for_async(2)
    assert len(received) == 2 and scripted.connections() == 2


async def test_a_session_that_failed_is_never_reused(scripted):
    mailer = mailer_for(scripted)
    await mailer.send_email("ana@example.com", delivery("es"))
    scripted.reply = "451 4.3.0 try later"
    with pytest.raises(MailDeliveryError):
        await mailer.send_email("ana@example.com", delivery("es"))
    assert mailer.sessions.count() == 0
    scripted.reply = None
    await mailer.send_email("ana@example.com", delivery("es"))
    await scripted.wait_for_async(2)
    assert scripted.connections() == 2, "the refused session was closed, the next opened another"


async def test_a_session_idle_too_long_is_not_reused(scripted):
    now = [0.0]
    mailer = mailer_for(scripted)
    mailer.sessions = IdleSessions(max_idle_s=30.0, clock=lambda: now[0])
    await mailer.send_email("ana@example.com", delivery("es"))
    now[0] = 31.0
    await mailer.send_email("ana@example.com", delivery("es"))
    await scripted.wait_for_async(2)
    assert scripted.connections() == 2


async def test_a_kept_session_is_reused_without_a_noop_per_message(scripted):
    mailer = mailer_for(scripted)
    for _ in range(3):
        await mailer.send_email("ana@example.com", delivery("es"))
    await scripted.wait_for_async(3)
    assert scripted.connections() == 1 and scripted.noops == 0


async def test_a_session_the_server_closed_while_idle_is_replaced_at_mail_from(scripted):
    """A server whose idle timeout passed answers the next command with 421 and hangs up:
    nothing of the message went out, so a fresh session carries it at once."""
    mailer = mailer_for(scripted)
    await mailer.send_email("ana@example.com", delivery("es"))
    scripted.mail_replies = ["421 4.4.2 idle too long, closing"]
    message_id = await mailer.send_email("bob@example.com", delivery("en"))
    first, second = await scripted.wait_for_async(2)
    assert second.message["Message-ID"] == message_id and second.rcpt_tos == ["bob@example.com"]
    assert scripted.connections() == 2 and scripted.mail_commands == 3


async def test_a_sender_refused_on_a_live_session_is_the_servers_answer(scripted):
    mailer = mailer_for(scripted)
    await mailer.send_email("ana@example.com", delivery("es"))
    scripted.mail_replies = ["550 5.7.1 sender not allowed"]
    with pytest.raises(MailDeliveryError) as caught:
        await mailer.send_email("ana@example.com", delivery("es"))
    assert is_permanent(caught.value) and caught.value.code == 550
    assert scripted.mail_commands == 2, "not tried again on a fresh session"
    assert mailer.sessions.count() == 0 and len(scripted.messages) == 1


@pytest.mark.parametrize(
    ("reply", "permanent"), [("450 4.2.1 mailbox busy", False), ("550 5.1.1 no such user", True)]
)
async def test_a_refused_recipient_is_classified(scripted, reply, permanent):
    scripted.rcpt_reply = reply
    with pytest.raises(MailDeliveryError) as caught:
        await mailer_for(scripted).send_email("nobody@example.com", delivery("es"))
    assert caught.value.code == int(reply[:3]) and is_permanent(caught.value) is permanent
    assert scripted.messages == []


async def test_a_named_recipient_and_a_non_ascii_attachment_name_arrive(smtp):
    await mailer_for(smtp).send_email(
        "José Pérez <jose@example.com>",
        delivery("es"),
        [Attachment("recibo de José.pdf", b"%PDF-1.7", "application/pdf")],
    )
    [received] = await smtp.wait_for_async(1)
    assert received.rcpt_tos == ["jose@example.com"]
    assert received.message["To"] == "José Pérez <jose@example.com>"
    [attachment] = received.message.iter_attachments()
    assert attachment.get_filename() == "recibo de José.pdf"
