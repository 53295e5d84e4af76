"""The benches' SMTP sink counts exactly the messages a client finished, however the bytes of
a conversation are split across TCP segments."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage

import aiosmtplib

from bench.standins.smtp import SmtpSink


async def test_aiosmtplib_sessions_are_counted_once_per_message() -> None:
    with SmtpSink() as sink:
        client = aiosmtplib.SMTP(hostname=sink.host, port=sink.port, start_tls=False)
        await client.connect()
        for text in ["", ".\n..\nuna línea con ñ\n", "x" * 200_000]:
            message = EmailMessage()
            message["From"], message["To"], message["Subject"] = (
                "a@example.com",
                "b@example.com",
                "s",
            )
            message.set_content(text)
            await client.send_message(message)
        await client.quit()
        await sink.wait_for_async(3, timeout=10)
        assert sink.received == 3


async def test_a_conversation_split_anywhere_gets_every_reply_and_counts_one_message() -> None:
    with SmtpSink() as sink:
        reader, writer = await asyncio.open_connection(sink.host, sink.port)
        assert (await reader.readline()).startswith(b"220 ")
        conversation = (
            b"EHLO me\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
        )
        for byte in conversation:  # one byte a segment
            writer.write(bytes([byte]))
            await writer.drain()
        replies = [await reader.readline() for _ in range(4 + 3)]  # EHLO's 4 lines, then 3
        assert replies[0].startswith(b"250-") and replies[3].startswith(b"250 ")
        assert [reply[:3] for reply in replies[4:]] == [b"250", b"250", b"354"]
        for piece in [b"Subject: s\r\n\r\nbody\r\n..not the end\r\n", b"\r", b"\n.", b"\r\n"]:
            writer.write(piece)
            await writer.drain()
        assert (await reader.readline()).startswith(b"250 ")
        assert sink.received == 1
        writer.write(b"QUIT\r\n")
        assert (await reader.readline()).startswith(b"221 ")
        assert await reader.read() == b""
        writer.close()
