"""A real SMTP server (aiosmtpd) on 127.0.0.1 for tests, collecting what it accepts.

It can be stopped and started again on the same port, so a test can show that mail sent
while the server is down arrives once it is back.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.common import free_port


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


def self_signed_tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh certificate for 127.0.0.1, and a client context that
    trusts exactly that certificate (verification stays on, as in production)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = f"{tmp}/cert.pem", f"{tmp}/key.pem"
        with open(cert_file, "wb") as f:
            f.write(cert_pem)
        with open(key_file, "wb") as f:
            f.write(key_pem)
        server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=cert_pem.decode("ascii"))
    return server, client


class SmtpStandin:
    """``reply`` set to e.g. ``"451 4.3.0 try later"`` makes the server refuse DATA with it
    (``refusals`` counts how often it did); ``credentials`` makes AUTH required; ``tls`` makes
    STARTTLS required, with a self-signed certificate that ``client_tls`` trusts."""

    def __init__(
        self,
        *,
        port: int | None = None,
        credentials: tuple[str, str] | None = None,
        tls: bool = False,
    ):
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.credentials = credentials
        self._server_tls, self.client_tls = self_signed_tls() if tls else (None, None)
        self.reply: str | None = None
        self._messages: list[ReceivedMail] = []
        self._refusals = 0
        self._sessions: list[int] = []  # the session each accepted message came in, in order
        self._changed = threading.Condition()
        self._controller: Controller | None = None

    @property
    def messages(self) -> list[ReceivedMail]:
        with self._changed:
            return list(self._messages)

    @property
    def sessions(self) -> list[int]:
        """For each accepted message, which SMTP session (connection) carried it."""
        with self._changed:
            return list(self._sessions)

    @property
    def refusals(self) -> int:
        with self._changed:
            return self._refusals

    def start(self) -> None:
        options: dict[str, Any] = {}
        if self._server_tls is not None:
            options.update(tls_context=self._server_tls, require_starttls=True)
        if self.credentials is not None:
            options.update(
                authenticator=self._authenticate,
                auth_required=True,
                auth_require_tls=self._server_tls is not None,
            )
        # server_hostname is explicit: aiosmtpd's default, socket.getfqdn(), may query DNS.
        controller = Controller(
            self, hostname=self.host, port=self.port, server_hostname="localhost", **options
        )
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpStandin:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        """Block until ``count`` messages have arrived, or fail at the deadline."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {count} messages within {timeout}s, got {len(self._messages)}"
                    )
                self._changed.wait(remaining)
            return list(self._messages)

    async def wait_for_async(self, count: int, timeout: float = 10.0) -> list[ReceivedMail]:
        return await asyncio.to_thread(self.wait_for, count, timeout)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.reply is not None:
            with self._changed:
                self._refusals += 1
            return self.reply
        content = envelope.original_content or envelope.content or b""
        assert isinstance(content, bytes)
        message = message_from_bytes(content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        received = ReceivedMail(
            mail_from=str(envelope.mail_from), rcpt_tos=list(envelope.rcpt_tos), message=message
        )
        with self._changed:
            self._messages.append(received)
            self._sessions.append(id(session))
            self._changed.notify_all()
        return "250 OK"

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and self.credentials == (
            data.login.decode(),
            data.password.decode(),
        )
        # handled=False: let aiosmtpd send the 235/535 reply itself.
        return AuthResult(success=ok, handled=False)
