"""SMTP sessions kept open between messages, so each email does not pay a new connection.

Opening a session (TCP connect, greeting, EHLO, STARTTLS, AUTH) and closing it (QUIT) cost more
than sending one message on it. A session that delivered a message is kept for the next one,
a few per event loop (an aiosmtplib client belongs to the loop that opened it), for at most
`max_idle_s`; one that failed in any way is closed, never reused. A session the server has
closed meanwhile is seen as not connected and skipped, at no cost. There is no NOOP before
each reuse (a round trip per message): the mailer's first command, MAIL FROM, is the check,
and a session that fails it by having gone away is replaced before anything of the message
was sent (`SmtpMailer._session_with_mail_from`).
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable

import aiosmtplib


class IdleSessions:
    def __init__(
        self,
        *,
        max_idle: int = 4,
        max_idle_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_idle = max_idle
        self.max_idle_s = max_idle_s
        self._clock = clock
        self._lock = threading.Lock()  # one mailer serves every thread's event loop
        self._by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, list[tuple[aiosmtplib.SMTP, float]]
        ] = weakref.WeakKeyDictionary()

    def take(self) -> aiosmtplib.SMTP | None:
        """The running loop's most recently used session, if one is young enough and still
        connected."""
        loop = asyncio.get_running_loop()
        now = self._clock()
        with self._lock:
            idle = self._by_loop.get(loop, [])
            stale = [entry for entry in idle if not self._usable(entry, now)]
            idle[:] = [entry for entry in idle if self._usable(entry, now)]
            taken = idle.pop()[0] if idle else None
        for client, _ in stale:
            client.close()
        return taken

    def _usable(self, entry: tuple[aiosmtplib.SMTP, float], now: float) -> bool:
        client, since = entry
        return now - since <= self.max_idle_s and client.is_connected

    def give_back(self, client: aiosmtplib.SMTP) -> bool:
        """Keep a session that just delivered; False when there is no room (close it then)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            idle = self._by_loop.setdefault(loop, [])
            if len(idle) >= self.max_idle or not client.is_connected:
                return False
            idle.append((client, self._clock()))
            return True

    def count(self) -> int:
        """Idle sessions of the running loop."""
        with self._lock:
            return len(self._by_loop.get(asyncio.get_running_loop(), []))

    async def close(self) -> None:
        """QUIT the running loop's idle sessions; other loops' are dropped with their loop."""
        with self._lock:
            idle = self._by_loop.pop(asyncio.get_running_loop(), [])
        for client, _ in idle:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
