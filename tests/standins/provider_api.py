"""A provider's API on 127.0.0.1 for tests: a sandbox app behind a recorder that can fail.

Each checkout stand-in (stripe_api, mercadopago_api, bitso_api) serves colmena's sandbox of that
provider, which speaks the provider's documented wire shapes, under `/api`, and adds what tests
need: every request recorded (method, path, headers, body), the next N answers replaced by an
error status on demand (`fail`), and the whole server down and back on the same port
(`go_down`, `come_back`), so a client sees connection refused in between.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.standins.smtp import free_port

PREFIX = "/api"
ErrorBody = Callable[[int], dict[str, Any]]


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class ProviderApi:
    def __init__(self, sandbox: web.Application, error_body: ErrorBody) -> None:
        self.sandbox = sandbox
        self.error_body = error_body
        self.requests: list[Recorded] = []
        self._failures: list[int] = []
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PREFIX}"

    def fail(self, status: int, times: int = 1) -> None:
        """The next `times` requests answer `status` with the provider's error body."""
        self._failures.extend([status] * times)

    def calls(self, path: str) -> list[Recorded]:
        """The recorded requests to `path` (below the prefix)."""
        return [request for request in self.requests if request.path == PREFIX + path]

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(Recorded(request.method, request.path, dict(request.headers), body))
        if self._failures:
            status = self._failures.pop(0)
            return web.json_response(self.error_body(status), status=status)
        return await handler(request)

    async def start(self) -> str:
        if self._runner is None:
            outer = web.Application(middlewares=[self._record])
            outer.add_subapp(PREFIX, self.sandbox)
            self._runner = web.AppRunner(outer)
            await self._runner.setup()
        self.port = self.port or free_port()
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await self._site.start()
        return self.url

    async def go_down(self) -> None:
        """Stop listening: connections are refused until `come_back`."""
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def come_back(self) -> None:
        await self.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
