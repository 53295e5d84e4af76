"""An SMTP server (aiosmtpd) on 127.0.0.1 that accepts every message and counts it.

The benches only need to know when the last email of a run was accepted; tests/ keeps its own,
fuller stand-in (TLS, AUTH, refusals, message contents).
"""

from __future__ import annotations

import asyncio
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.common import free_port


class SmtpSink:
    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self._received = 0
        self._changed = threading.Condition()
        self._controller: Controller | None = None

    @property
    def received(self) -> int:
        with self._changed:
            return self._received

    def start(self) -> None:
        # server_hostname is explicit: aiosmtpd's default, socket.getfqdn(), may query DNS.
        self._controller = Controller(
            self, hostname=self.host, port=self.port, server_hostname="localhost"
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, count: int, timeout: float) -> None:
        """Block until `count` messages have been accepted; RuntimeError at the deadline."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._received < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError(
                        f"expected {count} emails within {timeout}s, got {self._received}"
                    )
                self._changed.wait(remaining)

    async def wait_for_async(self, count: int, timeout: float) -> None:
        await asyncio.to_thread(self.wait_for, count, timeout)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._changed:
            self._received += 1
            self._changed.notify_all()
        return "250 OK"
