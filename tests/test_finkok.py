"""The PAC gateway against a local Finkok stand-in speaking Finkok's SOAP services: stamp,
recover a lost answer, refuse, cancel, and the SAT's status of what Finkok stamped."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import pytest
from lxml import etree
from satcfdi.cfdi import CFDI
from satcfdi.models import Signer

from colmena.gateways.cfdi import load_signer, sign_invoice, validate_xml
from colmena.gateways.pac import (
    PacAmbiguous,
    PacCredentials,
    PacGateway,
    PacRejected,
    PacTimeout,
    PacUnavailable,
    check_certifies,
)
from colmena.gateways.sat_status import SatStatusClient
from tests.standins.csd import (
    ISSUER_RFC,
    CertificateAuthority,
    CsdFiles,
    make_ca,
    make_csd,
    make_sat_certificate,
)
from tests.standins.finkok import SAT_CANCEL, StandInFinkok
from tests.standins.pac import sample_invoice

FINKOK_RFC = "FIN1203015JA"
TIMEOUT = 1.0


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return make_ca()


@pytest.fixture(scope="module")
def csd(ca: CertificateAuthority) -> CsdFiles:
    return make_csd(ca)


@pytest.fixture(scope="module")
def issuer(csd: CsdFiles) -> Signer:
    return load_signer(csd.certificate, csd.key, csd.password)


@pytest.fixture(scope="module")
def sat(ca: CertificateAuthority) -> Signer:
    files = make_sat_certificate(ca, pac_rfc=FINKOK_RFC)
    return load_signer(files.certificate, files.key, files.password)


@pytest.fixture
async def finkok(sat: Signer) -> AsyncIterator[StandInFinkok]:
    stand_in = StandInFinkok(sat_signer=sat)
    await stand_in.start()
    await stand_in.sat.start()
    yield stand_in
    await stand_in.sat.stop()
    await stand_in.stop()


def gateway_for(finkok: StandInFinkok, *, password: str | None = None) -> PacGateway:
    return PacGateway(
        "finkok",
        "TEST",
        credentials=PacCredentials(user=finkok.user, password=password or finkok.password),
        timeout=TIMEOUT,
        base_url=finkok.url,
    )


def operations(finkok: StandInFinkok) -> list[str]:
    return [operation for operation, _ in finkok.received]


async def stamp(gateway: PacGateway, xml: bytes):  # type: ignore[no-untyped-def]
    return await asyncio.to_thread(gateway.stamp, xml, reference="invoice-1")


async def test_stamps_a_valid_cfdi_certified_by_finkok(
    finkok: StandInFinkok, issuer: Signer, sat: Signer
) -> None:
    xml = sign_invoice(sample_invoice(), issuer).xml

    result = await stamp(gateway_for(finkok), xml)

    assert not result.recovered
    validate_xml(result.xml)
    check_certifies(result, xml)
    tfd = CFDI.from_string(result.xml)["Complemento"]["TimbreFiscalDigital"]
    assert tfd["UUID"] == result.uuid and tfd["RfcProvCertif"] == FINKOK_RFC
    assert sat.verify_sha256(tfd.cadena_original().encode(), base64.b64decode(tfd["SelloSAT"]))
    assert list(finkok.stamps) == [result.uuid] and operations(finkok) == ["stamp"]
    assert finkok.sat.records[result.uuid].issuer_rfc == ISSUER_RFC


async def test_a_lost_answer_is_recovered_through_stamped_even_while_it_lags(
    finkok: StandInFinkok, issuer: Signer
) -> None:
    xml = sign_invoice(sample_invoice(), issuer).xml
    gateway = gateway_for(finkok)
    finkok.drop_next, finkok.stamped_lag = 1, 1

    with pytest.raises(PacAmbiguous):
        await stamp(gateway, xml)  # stamped, answer lost
    with pytest.raises(PacAmbiguous, match="603"):
        await stamp(gateway, xml)  # 307, but `stamped` cannot return it yet
    recovered = await stamp(gateway, xml)

    assert recovered.recovered and list(finkok.stamps) == [recovered.uuid]
    check_certifies(recovered, xml)
    assert operations(finkok) == ["stamp", "stamp", "stamped", "stamp", "stamped"]


async def test_timeouts_and_outages_are_retryable_and_stamp_nothing(
    finkok: StandInFinkok, issuer: Signer
) -> None:
    xml = sign_invoice(sample_invoice(), issuer).xml
    gateway = gateway_for(finkok)
    finkok.hang_next, finkok.fail_next = 1, 1

    with pytest.raises(PacTimeout):
        await stamp(gateway, xml)
    with pytest.raises(PacUnavailable):
        await stamp(gateway, xml)
    assert finkok.stamps == {}

    finkok.fail_next, finkok.fail_status = 1, 504
    with pytest.raises(PacAmbiguous, match="504"):  # a proxy's timeout: it may have stamped
        await stamp(gateway, xml)
    assert not (await stamp(gateway, xml)).recovered


@pytest.mark.parametrize(
    ("change", "code"),
    [("password", "300"), ("receiver", "CFDI40143"), ("issuer", "702"), ("seal", "302")],
)
async def test_refusals_carry_finkoks_incidence_code(
    finkok: StandInFinkok, issuer: Signer, change: str, code: str
) -> None:
    xml = sign_invoice(sample_invoice(), issuer).xml
    password = None
    if change == "password":
        password = "wrong"
    elif change == "receiver":
        assert finkok.registered_rfcs is not None
        finkok.registered_rfcs.clear()
        finkok.registered_rfcs.add(ISSUER_RFC)
    elif change == "issuer":
        finkok.issuers.clear()
    else:
        xml = xml.replace(b'Folio="1"', b'Folio="2"')

    with pytest.raises(PacRejected) as refused:
        await stamp(gateway_for(finkok, password=password), xml)

    assert refused.value.code == code and not refused.value.retryable
    assert finkok.stamps == {}


async def test_cancel_is_filed_signed_and_the_sat_status_follows_it(
    finkok: StandInFinkok, issuer: Signer
) -> None:
    gateway = gateway_for(finkok)
    stamped = await stamp(gateway, sign_invoice(sample_invoice(), issuer).xml)
    status = SatStatusClient(base_url=finkok.sat.url, timeout=TIMEOUT)
    assert (await asyncio.to_thread(status.status, stamped.xml)).estado == "Vigente"

    filed = await asyncio.to_thread(
        gateway.cancel, stamped.xml, motive="02", replacement_uuid=None, signer=issuer
    )

    assert filed.code == "201" and filed.acuse is not None
    assert etree.fromstring(filed.acuse).attrib["RfcEmisor"] == ISSUER_RFC
    [request] = finkok.cancellations
    folio = request.find(f"{{{SAT_CANCEL}}}Folios/{{{SAT_CANCEL}}}Folio")
    assert folio is not None and folio.attrib == {"UUID": stamped.uuid, "Motivo": "02"}
    # Over 1,000 MXN to an RFC: the receiver must accept, so the SAT holds it in process.
    waiting = await asyncio.to_thread(status.status, stamped.xml)
    assert (waiting.estado, waiting.estatus_cancelacion) == ("Vigente", "En proceso")

    finkok.sat.accept(stamped.uuid)
    again = await asyncio.to_thread(
        gateway.cancel, stamped.xml, motive="02", replacement_uuid=None, signer=issuer
    )

    assert again.code == "202"
    cancelled = await asyncio.to_thread(status.status, stamped.xml)
    assert (cancelled.estado, cancelled.estatus_cancelacion) == (
        "Cancelado",
        "Cancelado con aceptación",
    )


async def test_motive_01_names_its_replacement_and_an_unknown_uuid_is_refused(
    finkok: StandInFinkok, issuer: Signer
) -> None:
    gateway = gateway_for(finkok)
    first = await stamp(gateway, sign_invoice(sample_invoice(folio="1"), issuer).xml)
    replacement = await stamp(gateway, sign_invoice(sample_invoice(folio="2"), issuer).xml)

    await asyncio.to_thread(
        gateway.cancel, first.xml, motive="01", replacement_uuid=replacement.uuid, signer=issuer
    )
    folio = finkok.cancellations[0].find(f".//{{{SAT_CANCEL}}}Folio")
    assert folio is not None and folio.attrib["FolioSustitucion"] == replacement.uuid

    finkok.sat.records.clear()  # the SAT does not know the UUID
    with pytest.raises(PacRejected) as refused:
        await asyncio.to_thread(
            gateway.cancel, first.xml, motive="02", replacement_uuid=None, signer=issuer
        )
    assert refused.value.code == "205"
