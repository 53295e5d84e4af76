"""The CFDI story in `colmena dev` with nothing configured: a test CSD minted once in the data
directory, the PAC sandbox (SW's wire format) driven by colmena's own gateway, and the whole story
from a second terminal."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from dramatiq.brokers.stub import StubBroker
from lxml import etree
from pydantic import SecretStr

from colmena.config import Settings
from colmena.domain.invoicing import Concept, Invoice, Issuer, Receiver
from colmena.errors import is_permanent
from colmena.gateways.cfdi import (
    SANDBOX_LEGEND,
    TFD,
    inspect_csd,
    is_sandbox_stamp,
    render_pdf,
    sign_invoice,
    validate_xml,
)
from colmena.gateways.csd import csd_signer
from colmena.gateways.pac import PacGateway, PacRejected, check_certifies, pac_gateway
from colmena.gateways.stamping_config import stamping_config
from colmena.http.app import create_app
from colmena.runtime.publisher import BrokerPublisher
from colmena.runtime.resources import Resources
from colmena.sandbox.pac import pac_app
from colmena.sandbox.pac_ledger import PAC_RFC, PacLedger
from colmena.sandbox.stamping import (
    PAC_SANDBOX_BANNER,
    SANDBOX_CSD_DIR,
    SANDBOX_CSD_VALIDITY,
    SAT_TEST_ISSUER,
    mint_sandbox_csd,
    sandbox_csd,
    stamping_configured,
    with_pac_sandbox,
)
from colmena.sandbox.test_csd import CA_NAME
from tests.conftest import wait_for
from tests.test_dev import free_port, ready, start_dev, stop


@dataclass
class Sandbox:
    settings: Settings
    ledger: PacLedger
    clock_offset: dt.timedelta = dt.timedelta(0)


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    """The PAC sandbox mounted as `colmena dev` mounts it, and settings as dev makes them."""
    state = Sandbox(settings=Settings(_env_file=None, data_dir=tmp_path), ledger=PacLedger())
    state.ledger.clock = lambda: dt.datetime.now(dt.UTC) + state.clock_offset
    app = web.Application()
    app.add_subapp("/sandbox/pac", pac_app(state.ledger))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.settings = with_pac_sandbox(state.settings, str(server.make_url("/sandbox/pac")))
    yield state
    await server.close()


def public_invoice(settings: Settings, *, folio: str = "1") -> Invoice:
    config = stamping_config(settings)
    return Invoice(
        issuer=config.issuer,
        receiver=Receiver(
            rfc="XAXX010101000",
            name="PUBLICO EN GENERAL",
            regime="616",
            postal_code=config.issuer.postal_code,
            cfdi_use="S01",
        ),
        series="A",
        folio=folio,
        payment_form="04",
        payment_method="PUE",
        concepts=(
            Concept(
                product_key="81112100",
                unit_key="E48",
                description="Licencia de software",
                unit_price=Decimal("1293.10"),
                iva_amount=Decimal("206.90"),
            ),
        ),
    )


def sealed(settings: Settings, *, folio: str = "1") -> bytes:
    return sign_invoice(public_invoice(settings, folio=folio), csd_signer(settings).signer()).xml


async def stamp(gateway: PacGateway, xml: bytes, reference: str):  # type: ignore[no-untyped-def]
    return await asyncio.to_thread(gateway.stamp, xml, reference=reference)


def test_dev_stamps_as_the_sat_test_issuer_only_when_nothing_is_configured(
    tmp_path: Path,
) -> None:
    bare = Settings(_env_file=None, data_dir=tmp_path)
    assert not stamping_configured(bare)
    for name, value in (
        ("pac_token", SecretStr("a real token")),
        ("cfdi_csd_cer_path", Path("/etc/csd.cer")),
        ("cfdi_issuer_rfc", "AAA010101AAA"),
        ("pac_base_url", "https://services.sw.com.mx"),
    ):
        assert stamping_configured(bare.model_copy(update={name: value})), name
    assert stamping_configured(Settings(_env_file=None, pac_provider="finkok"))
    assert stamping_configured(Settings(_env_file=None, pac_environment="TEST"))

    settings = with_pac_sandbox(bare, "http://127.0.0.1:8080/sandbox/pac")
    config = stamping_config(settings)
    assert config.issuer == Issuer(
        rfc="EKU9003173C9", name="ESCUELA KEMPER URGATE", regime="601", postal_code="42501"
    )
    assert {name: getattr(settings, name) for name in SAT_TEST_ISSUER} == SAT_TEST_ISSUER
    assert settings.pac_base_url == "http://127.0.0.1:8080/sandbox/pac"
    signer = csd_signer(settings).signer()  # the minted .key opens with the SAT's test password
    assert str(signer.rfc) == "EKU9003173C9" and len(signer.certificate_number) == 20
    assert settings.cfdi_csd_cer_path == tmp_path / SANDBOX_CSD_DIR / "EKU9003173C9.cer"


def test_the_sandbox_csd_is_minted_once_private_and_by_no_sat(tmp_path: Path) -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    cer, key = sandbox_csd(tmp_path)

    assert [path.name for path in tmp_path.iterdir()] == [SANDBOX_CSD_DIR]
    for path in (cer, key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    info = inspect_csd(cer.read_bytes())
    assert info.rfc == "EKU9003173C9"
    assert info.not_before <= before and info.not_after >= before + SANDBOX_CSD_VALIDITY
    issuer = x509.load_der_x509_certificate(cer.read_bytes()).issuer.rfc4514_string()
    assert f"CN={CA_NAME}" in issuer  # a private CA: valid at no PAC and not at the SAT

    minted = (cer.read_bytes(), key.read_bytes())
    assert sandbox_csd(tmp_path) == (cer, key)  # a restart finds it
    mint_sandbox_csd(tmp_path / SANDBOX_CSD_DIR)  # a second dev that lost the race to create it
    assert (cer.read_bytes(), key.read_bytes()) == minted
    assert [path.name for path in tmp_path.iterdir()] == [SANDBOX_CSD_DIR]


async def test_the_sandbox_stamps_through_colmenas_gateway(sandbox: Sandbox) -> None:
    gateway = pac_gateway(sandbox.settings)
    xml = sealed(sandbox.settings)

    result = await stamp(gateway, xml, "invoice-1")

    check_certifies(result, xml)
    validate_xml(result.xml)
    assert not result.recovered and is_sandbox_stamp(result.xml)
    tfd = etree.fromstring(result.xml).find(f".//{TFD}")
    assert tfd is not None
    assert (tfd.get("RfcProvCertif"), tfd.get("Leyenda")) == (PAC_RFC, SANDBOX_LEGEND)
    assert result.uuid == tfd.get("UUID", "").upper()
    assert render_pdf(result.xml).startswith(b"%PDF-")
    assert not is_sandbox_stamp(xml)

    # The same reference again (a retry after a lost answer): CFDI3307, recovered by UUID.
    again = await stamp(gateway, xml, "invoice-1")
    assert again.recovered and again.uuid == result.uuid
    # The same sealed XML under another reference: 307 with the earlier stamp.
    duplicate = await stamp(gateway, xml, "invoice-1-bis")
    assert duplicate.recovered and duplicate.uuid == result.uuid
    assert list(sandbox.ledger.stamps) == [result.uuid.lower()]


async def test_the_sandbox_refuses_what_a_pac_refuses(sandbox: Sandbox) -> None:
    gateway = pac_gateway(sandbox.settings)
    xml = sealed(sandbox.settings)

    production_token = sandbox.settings.model_copy(update={"pac_token": SecretStr("real-token")})
    with pytest.raises(PacRejected) as refused:
        await stamp(pac_gateway(production_token), xml, "r1")
    assert refused.value.code == "AU2000"

    tampered = xml.replace(b'Total="1500.00"', b'Total="1.00"')
    assert tampered != xml
    with pytest.raises(PacRejected) as refused:
        await stamp(gateway, tampered, "r2")
    assert refused.value.code in ("301", "302")

    root = etree.fromstring(xml)
    root.find("{http://www.sat.gob.mx/cfd/4}Emisor").set("Rfc", "AAA010101AAA")  # type: ignore[union-attr]
    with pytest.raises(PacRejected) as refused:
        await stamp(gateway, etree.tostring(root, xml_declaration=True, encoding="UTF-8"), "r3")
    assert refused.value.code == "302"  # the seal no longer matches the document

    sandbox.clock_offset = dt.timedelta(hours=73)
    with pytest.raises(PacRejected) as refused:
        await stamp(gateway, xml, "r4")
    assert refused.value.code == "401" and is_permanent(refused.value)
    assert sandbox.ledger.stamps == {}


def test_the_production_ingress_has_no_sandbox_route() -> None:
    """`colmena ingress` builds the app with create_app: the sandboxes are dev's alone."""
    settings = Settings(_env_file=None, database_url="postgresql://localhost/unused")
    broker = StubBroker()
    resources = Resources(
        settings,
        database_url="postgresql://localhost/unused",
        publisher=BrokerPublisher(broker, ""),
    )
    app = create_app(settings, resources)
    paths = [resource.canonical for resource in app.router.resources()]
    assert paths and not [path for path in paths if path.startswith("/sandbox")]


def colmena_in(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """An operator command from a second terminal: same directory, no COLMENA_* variable."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("COLMENA_")}
    return subprocess.run(
        [sys.executable, "-m", "colmena", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_a_stripe_payment_with_an_rfc_is_stamped_and_emailed_in_dev(tmp_path: Path) -> None:
    port = free_port()
    process = start_dev(tmp_path, port)
    try:
        await wait_for(lambda: ready(port), timeout=60, interval=0.25)
        sent = await asyncio.to_thread(
            colmena_in,
            tmp_path,
            "trigger",
            "stripe",
            "payment_intent.succeeded",
            "--rfc",
            "XAXX010101000",
            "--url",
            f"http://127.0.0.1:{port}/webhooks/stripe",
        )
        assert sent.returncode == 0, sent.stderr

        async def emailed_invoice() -> str | None:
            listed = await asyncio.to_thread(colmena_in, tmp_path, "invoices", "list")
            assert listed.returncode == 0, listed.stderr
            [row] = listed.stdout.splitlines()[1:] or [""]
            return row if " stamped " in row and row.endswith(" yes") else None

        row = await wait_for(emailed_invoice, timeout=90, interval=1.0)
        assert "XAXX010101000" in row and "1,500.00 MXN" in row
        shown = await asyncio.to_thread(colmena_in, tmp_path, "invoices", "show", row.split()[0])
        assert "EKU9003173C9" in shown.stdout
        assert "PAC sandbox, test CSD minted locally: no fiscal validity" in shown.stdout
        licenses = await asyncio.to_thread(colmena_in, tmp_path, "license", "list")
        assert "colmena-enterprise" in licenses.stdout and "1,500.00 MXN" in licenses.stdout

        checked = await asyncio.to_thread(colmena_in, tmp_path, "check")
        lines = checked.stdout.splitlines()
        stamping = [line for line in lines if line.startswith("ok       stamping ")]
        assert len(stamping) == 8 and all(line.endswith(" (dev sandbox)") for line in stamping)
        assert any(
            line.startswith("ok       payments")
            and "COLMENA_MERCADOPAGO_ACCESS_TOKEN" in line
            and line.endswith(" (dev sandbox)")
            for line in lines
        ), checked.stdout
        assert not any(line.startswith("MISSING  stamping") for line in lines), checked.stdout
    finally:
        output = await stop(process)
    assert process.returncode == 0, output
    assert f"CFDI       {PAC_SANDBOX_BANNER}" in output
    assert (tmp_path / ".colmena" / SANDBOX_CSD_DIR / "EKU9003173C9.key").is_file()

    mails = [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for path in sorted((tmp_path / ".colmena" / "mail").glob("*.eml"))
    ]
    [invoice_mail] = [m for m in mails if str(m["Subject"]).startswith("Factura A1 de ")]
    assert str(invoice_mail["Subject"]) == "Factura A1 de ESCUELA KEMPER URGATE"
    assert invoice_mail["To"] == "cliente@example.com"
    attached = sorted(part.get_filename() for part in invoice_mail.iter_attachments())
    assert [name.rsplit(".", 1)[1] for name in attached] == ["pdf", "xml"]
    body = invoice_mail.get_body(preferencelist=("plain",))
    assert body is not None and "1,500.00 MXN" in body.get_content()
    assert "sandbox de colmena dev" in body.get_content()
