"""The email bytes `gateways.mime` builds, read back by the email package's parser: whatever the
subject, bodies and attachments, a mail client sees exactly them, in well-formed MIME."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import parsedate_to_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from colmena.gateways.mime import Attachment, Composer, OutgoingMail

SENDER = "Colmena Licencias <licencias@colmena.example>"
COMPOSER = Composer(SENDER)

# Any text but lone surrogates (UTF-8 cannot encode them).
texts = st.text(st.characters(exclude_categories=("Cs",)))


def parsed(mail: OutgoingMail) -> EmailMessage:
    message = message_from_bytes(mail.data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert not message.defects
    return message


def body(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None and not part.defects
    return part.get_content().replace("\r\n", "\n")


def compose(**fields) -> OutgoingMail:
    values = {"to": "ana@example.com", "subject": "Hola", "text": "texto\n", "html": "<p>x</p>\n"}
    return COMPOSER.compose(**(values | fields))


def lines(mail: OutgoingMail) -> list[bytes]:
    assert mail.data.endswith(b"\r\n")
    return mail.data[:-2].split(b"\r\n")


@given(subject=texts, text=texts, html=texts)
def test_whatever_the_values_the_parser_reads_them_back(subject, text, html):
    mail = compose(subject=subject, text=text, html=html)
    message = parsed(mail)
    assert message["Subject"] == " ".join(subject.split())
    assert message.get_content_type() == "multipart/alternative"
    assert body(message, "plain") == text.replace("\r\n", "\n").replace("\r", "\n")
    assert body(message, "html") == html.replace("\r\n", "\n").replace("\r", "\n")
    assert mail.data.isascii()
    assert all(len(line) <= 78 for line in lines(mail)), "no line longer than RFC 5322 asks"
    assert b"\r" not in mail.data.replace(b"\r\n", b"") and b"\n" not in mail.data.replace(
        b"\r\n", b""
    ), "CRLF line endings only"


def test_headers_a_client_needs():
    first, second = compose(subject="Tu licencia de Colmena está lista"), compose()
    message = parsed(first)
    assert message["From"] == SENDER and message["To"] == "ana@example.com"
    assert message["Message-ID"] == first.message_id != second.message_id
    assert first.message_id.endswith("@colmena.example>")
    assert parsedate_to_datetime(message["Date"]).utcoffset() is not None
    assert message["MIME-Version"] == "1.0"
    assert (first.sender, first.recipients) == ("licencias@colmena.example", ("ana@example.com",))
    assert not first.smtputf8
    # Only the word that needs it is encoded, as the email package does: the raw subject stays
    # searchable.
    assert b"Subject: Tu licencia de Colmena =?utf-8?q?est=C3=A1?= lista\r\n" in first.data


def test_a_body_holding_the_boundary_cannot_end_its_part():
    evil = "--=_colmena_alternative\r\nContent-Type: text/html\r\n\r\n<script>\n--=_colmena_mixed--"
    message = parsed(compose(text=evil))
    assert body(message, "plain") == evil.replace("\r\n", "\n")
    assert body(message, "html") == "<p>x</p>\n"


def test_a_subject_cannot_add_headers():
    message = parsed(compose(subject="Hola\r\nBcc: victim@example.com\nX-Evil: 1"))
    assert message["Bcc"] is None and message["X-Evil"] is None
    assert message["Subject"] == "Hola Bcc: victim@example.com X-Evil: 1"


@pytest.mark.parametrize("to", ["ana@example.com\r\nBcc: victim@example.com", ""])
def test_a_recipient_with_a_line_break_or_none_is_refused(to):
    with pytest.raises(ValueError):
        compose(to=to)


def test_recipients_with_names_or_not_ascii_go_through_the_address_parser():
    named = compose(to="José Pérez <jose@example.com>")
    assert parsed(named)["To"] == "José Pérez <jose@example.com>"
    assert named.recipients == ("jose@example.com",) and not named.smtputf8
    assert named.data.isascii()
    international = compose(to="josé@example.com")
    assert international.recipients == ("josé@example.com",) and international.smtputf8
    assert parsed(international)["To"] == "josé@example.com"


def test_the_sender_must_be_one_address():
    with pytest.raises(ValueError):
        Composer("not an address")


@given(
    # The parser strips the whitespace around a filename, whoever wrote it.
    filename=st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=300)
    .map(str.strip)
    .filter(bool),
    content=st.binary(max_size=3000),
)
def test_attachments_arrive_as_they_were(filename, content):
    mail = compose(
        attachments=[
            Attachment(filename, content, "application/pdf"),
            Attachment("factura.xml", b"<cfdi:Comprobante/>", "application/xml"),
        ]
    )
    message = parsed(mail)
    assert message.get_content_type() == "multipart/mixed"
    assert body(message, "plain") == "texto\n" and body(message, "html") == "<p>x</p>\n"
    got = [
        (a.get_filename(), a.get_content_type(), a.get_content())
        for a in message.iter_attachments()
    ]
    assert got == [
        (filename, "application/pdf", content),
        ("factura.xml", "application/xml", b"<cfdi:Comprobante/>"),
    ]
    assert all(len(line) <= 78 for line in lines(mail))


def test_an_attachment_type_must_be_type_slash_subtype():
    with pytest.raises(ValueError):
        compose(attachments=[Attachment("a.pdf", b"x", "pdf\r\nX-Evil: 1")])
