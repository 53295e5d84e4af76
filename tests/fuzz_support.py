"""Shared pieces of the fuzz tests (tests/test_fuzz_*.py): one configured app, the properties.

Hypothesis drives async tests through pytest-asyncio (auto mode runs each example of an async
`@given` test on the test's own loop), so the function-scoped fixtures (database, app, client)
are made once per test and shared by its examples: that is what the suppressed health check is
about. Each property is checked after every example, so state left by one example can only make
a later one stricter, never hide a failure.

The properties, on every public route:
- never a 5xx;
- a request that must be refused (it fails authentication or verification, or breaks the
  route's documented rules) is answered 4xx, never 200;
- a refused request (any 4xx, or one that had to be refused) changes nothing in the database:
  every table's content is fingerprinted before and after;
- no secret the app was configured with, nor a token or key it issued, appears in the response
  (status line, headers, body) or in anything logged while the request ran.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import asyncpg
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, settings
from pydantic import SecretStr

from colmena.config import Settings
from colmena.config.logging import configure_logging
from colmena.gateways import bitso_webhooks
from colmena.http.publishing import AFTER_COMMIT
from tests.bots_support import ADMIN_TOKEN, FIRST_KEY

STRIPE_SECRET = "whsec_fuzz_" + "7c1d9e4b2a6f4e0b8d3c5a1f9e2b7d4c"
STRIPE_OLD_SECRET = "whsec_fuzz_" + "0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d"
MP_SECRET = "mpfuzz-" + "5e8f1a3c7b9d2e4f6a8c0b1d3e5f7a9c"
MP_ACCESS_TOKEN = "APP_USR-fuzz-" + "3f6a9c2e5b8d1f4a7c0e3b6d9f2a5c8e"

# Bounded runs: the whole fuzz suite stays well under two minutes on one machine. A longer hunt:
# COLMENA_FUZZ_EXAMPLES=2000 python -m pytest -q tests/test_fuzz_*.py
FUZZ = settings(
    max_examples=int(os.environ.get("COLMENA_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# A Bitso webhook key of the fuzz runs' own: with none, /webhooks/bitso answers 503
# not_configured before anything a fuzzed request could reach.
BITSO_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def fuzz_settings(settings_: Settings, **overrides: object) -> Settings:
    """Every secret configured (so each one can be looked for), and limits high enough that the
    rate limiter answers none of the examples (a 429 would test the limiter, not the route)."""
    return settings_.model_copy(
        update={
            "stripe_webhook_secrets": SecretStr(f"{STRIPE_SECRET},{STRIPE_OLD_SECRET}"),
            "mercadopago_webhook_secret": SecretStr(MP_SECRET),
            "mercadopago_access_token": SecretStr(MP_ACCESS_TOKEN),
            "bitso_webhook_public_keys": {"fuzz-key": bitso_webhooks.public_key_text(BITSO_KEY)},
            "bot_admin_token": SecretStr(ADMIN_TOKEN),
            "secret_keys": SecretStr(FIRST_KEY),
            "rate_limit_preset": "off",
            "license_download_token_per_minute": 1_000_000,
            "tenant_max_commands_in_flight": 1_000_000,  # no worker finishes the commands
            **overrides,
        }
    )


def configured_secrets(active: Settings) -> list[str]:
    """The secret values of these settings, as they would appear if leaked."""
    found = [
        *active.stripe_secrets(),
        *active.mercadopago_secrets(),
        MP_ACCESS_TOKEN,
        ADMIN_TOKEN,
        FIRST_KEY,
    ]
    if active.license_signing_key is not None:
        pem = active.license_signing_key.get_secret_value()
        found += [line for line in pem.splitlines() if line and not line.startswith("-----")]
    return found


class LogCapture:
    """Everything the app logs, rendered as in production (JSON lines), into a buffer."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()

    def text(self) -> str:
        return self.buffer.getvalue()

    def mark(self) -> int:
        return len(self.buffer.getvalue())

    def since(self, mark: int) -> str:
        return self.buffer.getvalue()[mark:]


@contextmanager
def capture_logs() -> Iterator[LogCapture]:
    """Production logging into a buffer. aiohttp's own access log is muted: the ingress runs
    with access_log=None (colmena/http/server.py), but the test server keeps it, and it would
    log request paths (a mutated download token holds the real one) that production never logs."""
    capture = LogCapture()
    configure_logging(dev=False, level="DEBUG")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    previous = handler.setStream(capture.buffer)
    access = logging.getLogger("aiohttp.access")
    access.disabled = True
    try:
        yield capture
    finally:
        access.disabled = False
        handler.setStream(previous)


@dataclass(frozen=True)
class Answer:
    """What came back: status and everything a client could read (headers and body as text)."""

    status: int
    text: str

    @classmethod
    async def of(cls, response: ClientResponse) -> Answer:
        async with response:
            body = await response.read()
            headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
            return cls(
                response.status,
                f"{response.reason}\n{headers}\n\n{body.decode('utf-8', 'replace')}",
            )


def assert_no_secret(where: str, text: str, secrets: Iterable[str]) -> None:
    for secret in secrets:
        assert secret not in text, f"a configured secret ({secret[:6]}...) appeared in the {where}"


def check(answer: Answer, logs: str, secrets: Iterable[str]) -> None:
    """The properties every request must keep, whatever was sent."""
    assert answer.status < 500, f"{answer.status}: {answer.text[:600]}"
    secrets = list(secrets)
    assert_no_secret("response", answer.text, secrets)
    assert_no_secret("logs", logs, secrets)


class Fingerprint:
    """The content of every table, hashed per table, so any stored or changed row shows up."""

    def __init__(self, conn: asyncpg.Connection, tables: list[str]) -> None:
        self.conn = conn
        self.tables = tables

    @classmethod
    async def of(cls, conn: asyncpg.Connection) -> Fingerprint:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
            "AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
        return cls(conn, [row["table_name"] for row in tables])

    async def take(self) -> dict[str, str]:
        digest = "md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
        parts = ", ".join(
            f'(SELECT {digest} FROM "{table}" t) AS "{table}"' for table in self.tables
        )
        return dict(await self.conn.fetchrow(f"SELECT {parts}"))

    async def assert_unchanged(self, before: dict[str, str], what: str) -> None:
        after = await self.take()
        changed = sorted(table for table in self.tables if before[table] != after[table])
        assert not changed, f"{what} changed tables: {', '.join(changed)}"


async def raw_request(
    host: str, port: int, head: bytes, body: bytes = b"", timeout: float = 10.0
) -> Answer:
    """One HTTP/1.1 request written byte for byte (headers no client library would send), the
    connection closed after it; the status and the whole answer as text."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head + b"\r\n" + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        await writer.wait_closed()
    status_line = data.split(b"\r\n", 1)[0].split(b" ")
    status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
    assert status, f"no HTTP answer: {data[:200]!r}"
    return Answer(status, data.decode("utf-8", "replace"))


class Target:
    """The app under fuzz, with what each example needs around its request: the state before,
    the log position, and the properties checked after."""

    def __init__(
        self, client: TestClient, fingerprint: Fingerprint, secrets: list[str], logs: LogCapture
    ) -> None:
        self.client = client
        self.fingerprint = fingerprint
        self.secrets = secrets
        self.logs = logs
        self._before: dict[str, str] = {}
        self._mark = 0

    def __repr__(self) -> str:  # keeps Hypothesis' failure reports short
        return "Target()"

    async def start(self) -> None:
        """Let rows accepted by earlier examples finish publishing (it updates the outbox),
        then note the state."""
        await self.client.app[AFTER_COMMIT].drain(10.0)
        self._before = await self.fingerprint.take()
        self._mark = self.logs.mark()

    async def finish(
        self,
        answer: Answer,
        *,
        refused: bool = False,
        changes_nothing: bool = False,
        what: str = "a refused request",
    ) -> None:
        """Check the properties every answer keeps, and whatever the example claims on top.

        Whatever else is claimed, a 4xx must have changed nothing. `refused=True` claims the
        request must be refused: the answer has to be a 4xx (a 200 fails the example), and
        nothing may have changed. `changes_nothing=True` claims only that nothing changed, for
        requests that may well be answered 200 (reads, public routes).
        """
        check(answer, self.logs.since(self._mark), self.secrets)
        if refused:
            assert 400 <= answer.status < 500, (
                f"{what} was answered {answer.status}, not refused: {answer.text[:300]}"
            )
        if refused or changes_nothing or 400 <= answer.status < 500:
            await self.fingerprint.assert_unchanged(self._before, what)

    async def send(self, method: str, path: str, **kwargs: object) -> Answer:
        return await Answer.of(await self.client.request(method, path, **kwargs))

    async def send_raw(self, head: bytes, body: bytes = b"") -> Answer:
        return await raw_request(self.client.host, self.client.port, head, body)


async def make_target(
    client: TestClient, conn: asyncpg.Connection, secrets: list[str], logs: LogCapture
) -> Target:
    return Target(client, await Fingerprint.of(conn), secrets, logs)
