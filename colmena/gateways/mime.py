"""The bytes of a customer email (text and HTML alternatives, maybe attachments), built directly.

The email package spent about 2 ms of worker CPU on every license email (EmailMessage and
set_content about 1.5, then aiosmtplib flattening it again through the generator), for a
message whose shape never changes. Here the shape is constant bytes and only the values are
encoded, with the C codecs of `binascii`: bodies as quoted-printable UTF-8, attachments as
base64, a non-ASCII subject as RFC 2047 encoded-words (cached per subject: one per product and
locale); CRLF line endings throughout, no line over 78 characters outside the address headers.
The boundaries are constant: they contain ``=_``, which quoted-printable and base64 output can
never contain, so no body can end a part early. The email package is still used where its
parser earns its cost and that cost is rare: the sender's From header (once per mailer) and
recipients that are not a plain address.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.utils import format_datetime, make_msgid
from functools import lru_cache
from urllib.parse import quote

_ALTERNATIVE = b"=_colmena_alternative"
_MIXED = b"=_colmena_mixed"
_TEXT_PART = (
    b'Content-Type: text/plain; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
)
_HTML_PART = (
    b'Content-Type: text/html; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
)
_ALTERNATIVE_TYPE = b'Content-Type: multipart/alternative; boundary="' + _ALTERNATIVE + b'"\r\n'
_MIXED_TYPE = b'Content-Type: multipart/mixed; boundary="' + _MIXED + b'"\r\n'

# A dot-atom address (what customers type), written as it is; anything else goes through the
# email package's address parser.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_MIME_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+")
_PLAIN_FILENAME = re.compile(r"[A-Za-z0-9._()-](?:[A-Za-z0-9._() -]{0,62}[A-Za-z0-9._()-])?")
# RFC 2047 section 5 (3): the characters an encoded-word may carry as they are, in any header.
_Q_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_HEADER_LINE = 78
_ENCODED_WORD_TEXT = _HEADER_LINE - len("Subject: =?utf-8?q??=")


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    mime_type: str  # e.g. "application/pdf"


@dataclass(frozen=True)
class OutgoingMail:
    """One message ready for SMTP: the envelope, and the DATA bytes (CRLF, not dot-stuffed).

    ``smtputf8`` is True when an address is not ASCII: the server must offer SMTPUTF8."""

    message_id: str
    sender: str
    recipients: tuple[str, ...]
    data: bytes
    smtputf8: bool


class Composer:
    """Builds the messages of one sender; what depends only on the sender is worked out once."""

    def __init__(self, sender: str) -> None:
        self._from, senders, self._smtputf8 = _address_header("From", sender)
        if len(senders) != 1:
            raise ValueError(f"sender must be one email address, got {sender!r}")
        self.sender = senders[0]
        _, at, self.domain = self.sender.rpartition("@")
        if not at or not self.domain:
            raise ValueError(f"sender must be an email address, got {sender!r}")

    def compose(
        self,
        *,
        to: str,
        subject: str,
        text: str,
        html: str,
        attachments: Sequence[Attachment] = (),
    ) -> OutgoingMail:
        """multipart/alternative (text first, HTML preferred), inside multipart/mixed when
        there are attachments, with a fresh Message-ID and Date."""
        recipients: tuple[str, ...]
        if _PLAIN_ADDRESS.fullmatch(to):
            to_line, recipients, smtputf8 = b"To: " + to.encode("ascii") + b"\r\n", (to,), False
        else:
            to_line, recipients, smtputf8 = _address_header("To", to)
            if not recipients:
                raise ValueError(f"no recipient address in {to!r}")
        message_id = make_msgid(domain=self.domain)
        alternative = b"".join(
            (
                _ALTERNATIVE_TYPE,
                b"\r\n--" + _ALTERNATIVE + b"\r\n",
                _TEXT_PART,
                _quoted_printable(text),
                b"\r\n--" + _ALTERNATIVE + b"\r\n",
                _HTML_PART,
                _quoted_printable(html),
                b"\r\n--" + _ALTERNATIVE + b"--\r\n",
            )
        )
        body = _mixed(alternative, attachments) if attachments else alternative
        data = b"".join(
            (
                self._from,
                to_line,
                _subject_line(subject),
                b"Date: " + format_datetime(datetime.now(UTC)).encode("ascii") + b"\r\n",
                b"Message-ID: " + message_id.encode("ascii") + b"\r\n",
                b"MIME-Version: 1.0\r\n",
                body,
            )
        )
        return OutgoingMail(
            message_id=message_id,
            sender=self.sender,
            recipients=recipients,
            data=data,
            smtputf8=smtputf8 or self._smtputf8,
        )


def _quoted_printable(body: str) -> bytes:
    """UTF-8, quoted-printable, CRLF; lines of at most 76 characters, a leading dot encoded."""
    lf = body.replace("\r\n", "\n").replace("\r", "\n")
    return binascii.b2a_qp(lf.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")


def _mixed(alternative: bytes, attachments: Sequence[Attachment]) -> bytes:
    parts = [_MIXED_TYPE, b"\r\n--" + _MIXED + b"\r\n", alternative]
    for attachment in attachments:
        if not _MIME_TYPE.fullmatch(attachment.mime_type):
            raise ValueError(f"mime_type must be type/subtype, got {attachment.mime_type!r}")
        parts += [
            b"\r\n--" + _MIXED + b"\r\n",
            b"Content-Type: " + attachment.mime_type.encode("ascii") + b"\r\n",
            b"Content-Transfer-Encoding: base64\r\n",
            _disposition(attachment.filename),
            base64.encodebytes(attachment.content).replace(b"\n", b"\r\n"),
        ]
    parts.append(b"\r\n--" + _MIXED + b"--\r\n")
    return b"".join(parts)


def _disposition(filename: str) -> bytes:
    """The attachment's Content-Disposition and the blank line after the part's headers:
    `filename="..."` when plain and short, otherwise RFC 2231 UTF-8 in continuations of short
    lines."""
    if _PLAIN_FILENAME.fullmatch(filename):
        return f'Content-Disposition: attachment;\r\n filename="{filename}"\r\n\r\n'.encode("ascii")
    encoded = quote(filename, safe="")
    pieces, start = [], 0
    while start < len(encoded):
        end = min(start + 56, len(encoded))  # the first line: 20 + 56 + ";"
        while end < len(encoded) and "%" in encoded[end - 2 : end]:
            end -= 1  # never split a %XX escape
        pieces.append(encoded[start:end])
        start = end
    charset = "utf-8''"
    params = ";".join(
        f"\r\n filename*{index}*={charset if index == 0 else ''}{piece}"
        for index, piece in enumerate(pieces)
    )
    return f"Content-Disposition: attachment;{params}\r\n\r\n".encode("ascii")


@lru_cache(maxsize=512)
def _subject_line(subject: str) -> bytes:
    """The Subject header on lines of at most 78 characters, folded at spaces: plain words as
    they are, runs of other words as RFC 2047 Q encoded-words (as the email package writes
    them, so the raw subject stays readable). All whitespace becomes one space, so no line
    break gets through (header injection). Cached: a product's subject is the same in every
    email of its locale."""
    tokens: list[str] = []
    run: list[str] = []
    for word in subject.split():
        if _is_plain_word(word):
            tokens += _encoded_words(" ".join(run)) if run else []
            run = []
            tokens.append(word)
        else:
            run.append(word)
    tokens += _encoded_words(" ".join(run)) if run else []
    lines, line = [], "Subject:"
    for token in tokens:
        if len(line) + 1 + len(token) > _HEADER_LINE and line != "Subject:":
            lines.append(line)
            line = ""
        line += " " + token
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _is_plain_word(word: str) -> bool:
    return (
        word.isascii()
        and word.isprintable()
        and "=?" not in word
        and len(word) <= _HEADER_LINE - len("Subject: ")
    )


def _encoded_words(text: str) -> list[str]:
    """``text`` as Q encoded-words short enough for a header's first line, split between
    characters (an encoded-word never holds part of a character)."""
    words, word = [], ""
    for char in text:
        encoded = (
            char
            if char in _Q_SAFE
            else "_"
            if char == " "
            else "".join(f"={byte:02X}" for byte in char.encode("utf-8"))
        )
        if len(word) + len(encoded) > _ENCODED_WORD_TEXT:
            words.append(word)
            word = ""
        word += encoded
    words.append(word)
    return [f"=?utf-8?q?{w}?=" for w in words]


def _address_header(name: str, value: str) -> tuple[bytes, tuple[str, ...], bool]:
    """The header line, its addresses and whether they need SMTPUTF8, by the email package:
    display names, groups and quoting done as it does them; line breaks refused."""
    _, header = policy.SMTP.header_store_parse(name, value)  # ValueError on a line break
    addresses = tuple(address.addr_spec for address in header.addresses)
    smtputf8 = not all(address.isascii() for address in addresses)
    chosen = policy.SMTPUTF8 if smtputf8 else policy.SMTP
    return chosen.fold_binary(name, header), addresses, smtputf8
