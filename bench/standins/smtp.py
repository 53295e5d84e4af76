"""An SMTP server on 127.0.0.1 that accepts every message and counts it.

The benches only need to know how many emails were accepted, and the sink shares the driver's
CPU with the sender it measures against: so it speaks just the commands colmena's mailer sends
(EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; RFC 5321's replies and dot-terminated DATA) on
a bare asyncio protocol, at a fraction of a full server's cost per message. tests/ keeps its
own, fuller stand-in (aiosmtpd: TLS, AUTH, refusals, message contents).
"""

from __future__ import annotations

import asyncio
import threading
import time

from bench.common import free_port

GREETING = b"220 localhost ESMTP colmena bench sink\r\n"
EHLO_REPLY = b"250-localhost\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 33554432\r\n"
END_OF_DATA = b"\r\n.\r\n"
LONGEST_LINE = 65536  # far past RFC 5321's 512 octets: a client sending more is broken


class _Session(asyncio.Protocol):
    """One client's conversation: command lines, or message data up to its lone dot."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.in_data = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.sink._sessions.add(self)
        transport.write(GREETING)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        replies = bytearray()
        while self.transport is not None:
            if self.in_data:
                # The data began right after the 354, so a message ending at once is "\r\n." of
                # its own; searching from one byte before the buffer covers it.
                end = (b"\r\n" + self.buffer).find(END_OF_DATA)
                if end < 0:
                    break
                del self.buffer[: max(0, end + len(END_OF_DATA) - 2)]
                self.in_data = False
                self.sink._accepted()
                replies += b"250 OK queued\r\n"
                continue
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                if len(self.buffer) > LONGEST_LINE:
                    replies += b"500 line too long\r\n"
                    self._close(replies)
                break
            verb = bytes(self.buffer[:4]).upper()
            del self.buffer[: line_end + 2]
            if verb == b"EHLO":
                replies += EHLO_REPLY
            elif verb in (b"HELO", b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                replies += b"250 OK\r\n"
            elif verb == b"DATA":
                replies += b"354 end data with <CR><LF>.<CR><LF>\r\n"
                self.in_data = True
            elif verb == b"QUIT":
                replies += b"221 bye\r\n"
                self._close(replies)
                return
            else:
                replies += b"502 command not implemented\r\n"
        if replies and self.transport is not None:
            self.transport.write(bytes(replies))

    def _close(self, replies: bytearray) -> None:
        if self.transport is not None:
            self.transport.write(bytes(replies))
            replies.clear()
            self.transport.close()
            self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.sink._sessions.discard(self)


class SmtpSink:
    """The server, on a thread and event loop of its own (benches drive it from sync code)."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self._received = 0
        self._changed = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._sessions: set[_Session] = set()

    @property
    def received(self) -> int:
        with self._changed:
            return self._received

    def _accepted(self) -> None:
        with self._changed:
            self._received += 1
            self._changed.notify_all()

    def start(self) -> None:
        """Listen, on a thread of its own (callers may be on an event loop already)."""
        loop = asyncio.new_event_loop()
        listening = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(lambda: _Session(self), self.host, self.port)
                )
            except BaseException as exc:
                failure.append(exc)
                return
            finally:
                listening.set()
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name="smtp-sink", daemon=True)
        self._thread.start()
        listening.wait()
        if failure:
            raise failure[0]

    def stop(self) -> None:
        loop, server, thread = self._loop, self._server, self._thread
        if loop is None or server is None or thread is None:
            return
        self._loop = self._server = self._thread = None

        async def close() -> None:
            server.close()
            for session in list(self._sessions):
                if session.transport is not None:
                    session.transport.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()

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
