"""A TCP proxy a test or a bench run cuts, to make a real PostgreSQL or RabbitMQ unreachable
on demand; listening elsewhere than 127.0.0.1, it relays a loopback service to network
namespaces (bench/cluster/hosts.py). tests/ uses this one too."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(
        self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1"
    ) -> None:
        self.listen_host = listen_host
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._upstreams: set[asyncio.StreamWriter] = set()  # towards the target

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._accept, self.listen_host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update({writer, up_writer})
        self._upstreams.add(up_writer)
        for task in (
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ):
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                data = self._passed(writer, data)
                if data:
                    writer.write(data)
                    await writer.drain()
        writer.close()

    def _passed(self, _writer: asyncio.StreamWriter, data: bytes) -> bytes:
        """What of `data` goes on to `_writer`: all of it (a subclass may swallow some)."""
        return data

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones, like a dead server."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        self._upstreams.clear()
        for task in list(self._pipes):
            task.cancel()

    async def restore(self) -> None:
        await self.start(self.port)
