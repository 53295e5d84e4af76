"""A mailer for `colmena dev` without an SMTP server: each message becomes an .eml file.

Same interface as `SmtpMailer.send_email`, so the actors that send mail cannot tell them
apart; a developer opens the file (any mail client reads .eml) to follow the download link.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import structlog

from colmena.gateways.mail import Attachment, RenderedEmail
from colmena.gateways.mime import Composer

log = structlog.get_logger(__name__)


class MailDropMailer:
    def __init__(self, directory: Path, *, sender: str) -> None:
        self.directory = Path(directory)
        self.sender = sender
        self._composer = Composer(sender)

    def __repr__(self) -> str:
        return f"MailDropMailer(directory={str(self.directory)!r})"

    async def send_email(
        self, to: str, email: RenderedEmail, attachments: Sequence[Attachment] = ()
    ) -> str:
        message = self._composer.compose(
            to=to, subject=email.subject, text=email.text, html=email.html, attachments=attachments
        )
        path = await asyncio.to_thread(self._write, message.data)
        message_id = message.message_id
        log.info("mail written to file (no SMTP configured)", message_id=message_id, path=str(path))
        return message_id

    def _write(self, data: bytes) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".mail-", suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        final = Path(tmp).with_name(Path(tmp).name.removeprefix(".").replace(".part", ".eml"))
        os.replace(tmp, final)
        return final
