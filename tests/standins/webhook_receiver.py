"""A local receiver of signed webhooks: records every request exactly as it arrived.

Per path it answers 200 (`ok`), fails the first N requests with 500 (`fail`), or holds every
request open until `release()` (`hang`), as a tenant's slow or dead server would. Verification
is the test's job (`verify`, written from the Standard Webhooks specification, independently of
colmena's signer).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field

from aiohttp import web

from tests.standins.serving import serve


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class SignatureInvalid(Exception):
    pass


def verify(secret: str, headers: dict[str, str], body: bytes, *, tolerance_s: int = 300) -> None:
    """Standard Webhooks verification: HMAC-SHA256 over `id.timestamp.body` keyed by the base64
    after `whsec_`, any `v1,` entry of the space-separated list, constant-time, fresh timestamp."""
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance_s:
        raise SignatureInvalid("timestamp outside the tolerance")
    key = base64.b64decode(secret.split("_", 1)[1])
    expected = base64.b64encode(
        hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    ).decode()
    for entry in headers["webhook-signature"].split(" "):
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return
    raise SignatureInvalid("no signature matches")


def _closing(response: web.Response) -> web.Response:
    """No keep-alive: stopping the receiver then waits for no idle client connection."""
    response.force_close()
    return response


@dataclass
class WebhookReceiver:
    modes: dict[str, str] = field(default_factory=dict)  # path -> ok | fail | hang
    failures: dict[str, int] = field(default_factory=dict)  # path -> 500s still to answer
    received: list[Received] = field(default_factory=list)
    hanging: int = 0
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    def release(self) -> None:
        self._release.set()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(
            Received(request.path, {k.lower(): v for k, v in request.headers.items()}, body)
        )
        mode = self.modes.get(request.path, "ok")
        if mode == "hang":
            self.hanging += 1
            try:
                await self._release.wait()
            finally:
                self.hanging -= 1
        if mode == "fail" and self.failures.get(request.path, 0) > 0:
            self.failures[request.path] -= 1
            return _closing(web.Response(status=500, text="not now"))
        if mode == "fail" and request.path not in self.failures:
            return _closing(web.Response(status=500, text="never"))
        return _closing(web.Response(status=204))

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner, url = await serve(app)
        return url

    async def stop(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()
