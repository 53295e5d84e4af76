"""Local stand-ins for bcv.org.ve and Binance's P2P adv/search endpoint.

Both are real aiohttp servers on 127.0.0.1 serving the recorded-shape
fixtures, scriptable between requests (ok / 5xx / 403 / timeout, optionally
failing only the first N requests). The BCV one can serve HTTPS from a test
PKI that reproduces bcv.org.ve's defect: the server sends only its leaf, so
the client must bring the intermediate in its CA bundle.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
NORMAL_BOOK = {"BUY": "normal_buy.json", "SELL": "normal_sell.json"}
Mode = Literal["ok", "5xx", "403", "timeout"]
_HANG_LIMIT_S = 30.0
_NO_KEY_USAGE = dict.fromkeys(
    (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    ),
    False,
)


@dataclass(frozen=True)
class StandInPki:
    """CA files for the HTTPS stand-in, mirroring the BCV situation."""

    bundle: Path  # intermediate + root: what colmena's shipped bundle does for bcv.org.ve
    root_only: Path  # the root alone: fails, because the server omits the intermediate
    wrong_ca: Path  # an unrelated CA: fails
    server_context: ssl.SSLContext  # presents only the leaf certificate


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "colmena tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    path_length: int | None = None,
) -> x509.Certificate:
    now = datetime.now(UTC)
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(**{**_NO_KEY_USAGE, "key_cert_sign": True, "crl_sign": True}),
            critical=True,
        )
    else:
        builder = (
            builder.add_extension(
                x509.KeyUsage(**{**_NO_KEY_USAGE, "digital_signature": True}), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def make_test_pki(directory: Path) -> StandInPki:
    """Root -> intermediate -> leaf for 127.0.0.1, plus an unrelated CA."""
    root_key, intermediate_key, leaf_key, wrong_key = (
        ec.generate_private_key(ec.SECP256R1()) for _ in range(4)
    )
    root = _certificate("Test Root", root_key, None, root_key, ca=True)
    intermediate = _certificate(
        "Test Intermediate", intermediate_key, root, root_key, ca=True, path_length=0
    )
    leaf = _certificate("127.0.0.1", leaf_key, intermediate, intermediate_key, ca=False)
    wrong = _certificate("Unrelated Root", wrong_key, None, wrong_key, ca=True)

    files = {
        "bundle.pem": _pem(intermediate, root),
        "root-only.pem": _pem(root),
        "wrong-ca.pem": _pem(wrong),
        "leaf.pem": _pem(leaf),
        "leaf.key": leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    }
    for name, content in files.items():
        (directory / name).write_bytes(content)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(directory / "leaf.pem", directory / "leaf.key")
    return StandInPki(
        directory / "bundle.pem",
        directory / "root-only.pem",
        directory / "wrong-ca.pem",
        server_context,
    )


@dataclass
class Recorded:
    method: str
    path: str
    user_agent: str
    body: Any


@dataclass
class StandIn:
    """Scripted behaviour, changed freely between requests by the test.

    `mode` applies to the first `fail_times` requests (all of them when None);
    after that the fixture is served. `requests` records every hit.
    """

    mode: Mode = "ok"
    fail_times: int | None = None
    bcv_page: str = "normal.html"
    binance_book: dict[str, str] = field(default_factory=lambda: dict(NORMAL_BOOK))
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    def _failing(self) -> bool:
        return self.mode != "ok" and (
            self.fail_times is None or len(self.requests) <= self.fail_times
        )

    async def _misbehave(self) -> web.Response:
        if self.mode == "timeout":
            await asyncio.wait_for(self._release.wait(), _HANG_LIMIT_S)
            return web.Response(status=504)
        if self.mode == "403":
            return web.Response(
                status=403, text="<html><body>403 Forbidden</body></html>", content_type="text/html"
            )
        return web.Response(
            status=503,
            text="<html><body>Service Unavailable</body></html>",
            content_type="text/html",
        )

    async def bcv(self, request: web.Request) -> web.Response:
        self.requests.append(
            Recorded(request.method, request.path, request.headers.get("User-Agent", ""), None)
        )
        if self._failing():
            return await self._misbehave()
        html = (FIXTURES / "bcv" / self.bcv_page).read_text(encoding="utf-8")
        return web.Response(text=html, content_type="text/html", charset="utf-8")

    async def binance(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(
            Recorded(request.method, request.path, request.headers.get("User-Agent", ""), body)
        )
        if self._failing():
            return await self._misbehave()
        fixture = self.binance_book[body["tradeType"]]
        payload = json.loads((FIXTURES / "binance" / fixture).read_text(encoding="utf-8"))
        return web.json_response(payload)


@asynccontextmanager
async def _serve(
    stand_in: StandIn, app: web.Application, ssl_context: ssl.SSLContext | None
) -> AsyncIterator[StandIn]:
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    stand_in.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    try:
        yield stand_in
    finally:
        stand_in._release.set()
        await runner.cleanup()


@asynccontextmanager
async def bcv_standin(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[StandIn]:
    """The BCV home page at `<url>/`."""
    stand_in = StandIn()
    app = web.Application()
    app.router.add_get("/", stand_in.bcv)
    async with _serve(stand_in, app, ssl_context) as served:
        yield served


@asynccontextmanager
async def binance_standin() -> AsyncIterator[StandIn]:
    """The P2P search at `<url>/bapi/c2c/v2/friendly/c2c/adv/search`."""
    stand_in = StandIn()
    app = web.Application()
    app.router.add_post("/bapi/c2c/v2/friendly/c2c/adv/search", stand_in.binance)
    async with _serve(stand_in, app, None) as served:
        served.url += "/bapi/c2c/v2/friendly/c2c/adv/search"
        yield served
