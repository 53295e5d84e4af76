"""The PAC gateway against a local SW Sapien stand-in speaking SW's REST format."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator

import pytest
from satcfdi.cfdi import CFDI
from satcfdi.models import Signer

from colmena.errors import is_permanent
from colmena.gateways.cfdi import (
    CsdExpired,
    load_signer,
    render_pdf,
    sign_invoice,
    validate_xml,
)
from colmena.gateways.pac import (
    PacAmbiguous,
    PacCredentials,
    PacForeignStamp,
    PacGateway,
    PacRejected,
    PacTimeout,
    PacUnavailable,
    StampResult,
    check_certifies,
)
from tests.standins.csd import (
    ISSUER_RFC,
    RECEIVER_RFC,
    CertificateAuthority,
    CsdFiles,
    make_ca,
    make_csd,
    make_expired_csd,
    make_sat_certificate,
)
from tests.standins.pac import StandInSW, sample_invoice

TIMEOUT = 1.0


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return make_ca()


@pytest.fixture(scope="module")
def csd(ca: CertificateAuthority) -> CsdFiles:
    return make_csd(ca)


@pytest.fixture(scope="module")
def sat(ca: CertificateAuthority) -> Signer:
    files = make_sat_certificate(ca)
    return load_signer(files.certificate, files.key, files.password)


@pytest.fixture
async def pac(sat: Signer) -> AsyncIterator[StandInSW]:
    stand_in = StandInSW(sat_signer=sat, registered_rfcs={ISSUER_RFC, RECEIVER_RFC})
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


def gateway_for(pac: StandInSW, *, timeout: float = TIMEOUT, **credentials: str) -> PacGateway:
    return PacGateway(
        "sw",
        "TEST",
        credentials=PacCredentials(**(credentials or {"token": pac.token})),
        timeout=timeout,
        base_url=pac.url,
    )


def signed_xml(csd: CsdFiles, **invoice: str) -> bytes:
    return sign_invoice(
        sample_invoice(**invoice), load_signer(csd.certificate, csd.key, csd.password)
    ).xml


def stamps_sent(pac: StandInSW) -> list[str]:
    return [customid for kind, customid in pac.received if kind == "stamp"]


async def test_happy_path_stamps_a_valid_cfdi_with_a_verifiable_tfd(
    pac: StandInSW, csd: CsdFiles, sat: Signer
) -> None:
    result = await asyncio.to_thread(gateway_for(pac).stamp, signed_xml(csd), reference="invoice-1")

    assert not result.recovered
    validate_xml(result.xml)
    stamped = CFDI.from_string(result.xml)
    tfd = stamped["Complemento"]["TimbreFiscalDigital"]
    assert tfd["Version"] == "1.1" and tfd["UUID"] == result.uuid
    assert tfd["FechaTimbrado"] == result.fecha_timbrado.replace(tzinfo=None)
    assert tfd["SelloCFD"] == stamped["Sello"]
    assert (
        tfd["NoCertificadoSAT"] == sat.certificate_number and tfd["RfcProvCertif"] == "LSO1306189R5"
    )
    assert sat.verify_sha256(tfd.cadena_original().encode(), base64.b64decode(tfd["SelloSAT"]))
    assert list(pac.stamps) == [result.uuid]
    assert stamps_sent(pac) == ["invoice-1"]
    assert render_pdf(result.xml).startswith(b"%PDF-")


async def test_user_and_password_authenticate_first(pac: StandInSW, csd: CsdFiles) -> None:
    gateway = gateway_for(pac, user=pac.user, password=pac.password)

    result = await asyncio.to_thread(gateway.stamp, signed_xml(csd), reference="invoice-auth")

    assert [kind for kind, _ in pac.received] == ["authenticate", "stamp"]
    assert list(pac.stamps) == [result.uuid]


async def test_same_xml_again_is_recovered_from_the_307_answer(
    pac: StandInSW, csd: CsdFiles
) -> None:
    gateway = gateway_for(pac)
    xml = signed_xml(csd)

    first = await asyncio.to_thread(gateway.stamp, xml, reference="invoice-1")
    again = await asyncio.to_thread(gateway.stamp, xml, reference="another-reference")

    assert again.recovered and again.uuid == first.uuid and again.xml == first.xml
    assert len(pac.stamps) == 1


async def test_reused_customid_is_recovered_through_storage(pac: StandInSW, csd: CsdFiles) -> None:
    gateway = gateway_for(pac)

    first = await asyncio.to_thread(gateway.stamp, signed_xml(csd), reference="invoice-1")
    resealed = signed_xml(csd)  # same invoice sealed again: new Fecha/Sello, same reference
    again = await asyncio.to_thread(gateway.stamp, resealed, reference="invoice-1")

    assert again.recovered and again.uuid == first.uuid
    assert ("datawarehouse", first.uuid) in pac.received
    assert len(pac.stamps) == 1


async def test_a_stamp_that_certifies_another_document_is_refused_as_foreign(
    pac: StandInSW, csd: CsdFiles
) -> None:
    gateway = gateway_for(pac)
    theirs, ours = signed_xml(csd, folio="1"), signed_xml(csd, folio="2")
    first = await asyncio.to_thread(gateway.stamp, theirs, reference="shared-reference")
    # The same reference reused on a shared PAC account: the PAC hands back the first stamp.
    again = await asyncio.to_thread(gateway.stamp, ours, reference="shared-reference")

    check_certifies(first, theirs)
    assert again.uuid == first.uuid
    with pytest.raises(PacForeignStamp) as foreign:
        check_certifies(again, ours)
    assert foreign.value.code == "FOREIGN_STAMP" and first.uuid in foreign.value.message
    assert is_permanent(foreign.value)


async def test_response_lost_after_stamping_then_retry_recovers_one_uuid(
    pac: StandInSW, csd: CsdFiles
) -> None:
    gateway = gateway_for(pac)
    xml = signed_xml(csd)
    pac.drop_next = 1

    with pytest.raises(PacAmbiguous) as caught:
        await asyncio.to_thread(gateway.stamp, xml, reference="invoice-1")
    assert len(pac.stamps) == 1  # the PAC did stamp; only the answer was lost
    assert not is_permanent(caught.value)  # the worker asks again, with the same bytes

    retried = await asyncio.to_thread(gateway.stamp, xml, reference="invoice-1")

    assert retried.recovered and [retried.uuid] == list(pac.stamps)


async def test_5xx_is_unavailable_then_the_retry_stamps(pac: StandInSW, csd: CsdFiles) -> None:
    gateway = gateway_for(pac)
    xml = signed_xml(csd)
    pac.fail_next = 1

    with pytest.raises(PacUnavailable) as caught:
        await asyncio.to_thread(gateway.stamp, xml, reference="invoice-1")
    assert pac.stamps == {} and not is_permanent(caught.value)

    result = await asyncio.to_thread(gateway.stamp, xml, reference="invoice-1")

    assert not result.recovered and list(pac.stamps) == [result.uuid]


async def test_timeout_is_ambiguous_and_respects_the_configured_limit(
    pac: StandInSW, csd: CsdFiles
) -> None:
    gateway = gateway_for(pac, timeout=0.5)
    xml = signed_xml(csd)
    pac.hang_next = 1

    started = time.monotonic()
    with pytest.raises(PacTimeout):
        await asyncio.to_thread(gateway.stamp, xml, reference="invoice-1")
    elapsed = time.monotonic() - started

    assert 0.5 <= elapsed < 2.0
    assert isinstance(PacTimeout(), PacAmbiguous)


async def test_unregistered_receiver_rfc_is_rejected_with_the_pac_code(
    pac: StandInSW, csd: CsdFiles
) -> None:
    xml = signed_xml(csd, receiver_rfc="XXX010101XX0")

    with pytest.raises(PacRejected) as caught:
        await asyncio.to_thread(gateway_for(pac).stamp, xml, reference="invoice-1")

    assert caught.value.code == "CFDI40143"
    assert "RFC del receptor" in caught.value.message
    assert pac.stamps == {} and is_permanent(caught.value)


async def test_bad_token_is_rejected(pac: StandInSW, csd: CsdFiles) -> None:
    with pytest.raises(PacRejected) as caught:
        await asyncio.to_thread(
            gateway_for(pac, token="wrong").stamp, signed_xml(csd), reference="invoice-1"
        )

    assert caught.value.code == "AU2000"


async def test_tampered_xml_is_rejected_by_the_seal_check(pac: StandInSW, csd: CsdFiles) -> None:
    xml = signed_xml(csd).replace(b'Descripcion="Soporte"', b'Descripcion="Soporte premium"')

    with pytest.raises(PacRejected) as caught:
        await asyncio.to_thread(gateway_for(pac).stamp, xml, reference="invoice-1")

    assert caught.value.code == "302"


async def test_expired_csd_is_refused_before_any_pac_call(
    pac: StandInSW, ca: CertificateAuthority
) -> None:
    expired = make_expired_csd(ca)
    gateway = gateway_for(pac)

    def issue() -> StampResult:
        xml = sign_invoice(
            sample_invoice(), load_signer(expired.certificate, expired.key, expired.password)
        ).xml
        return gateway.stamp(xml, reference="invoice-1")

    with pytest.raises(CsdExpired):
        await asyncio.to_thread(issue)

    assert pac.received == []


async def test_unreachable_pac_is_unavailable(csd: CsdFiles, sat: Signer) -> None:
    stand_in = StandInSW(sat_signer=sat)
    await stand_in.start()
    url = stand_in.url
    await stand_in.stop()
    gateway = PacGateway(
        "sw", "TEST", credentials=PacCredentials(token="t"), timeout=TIMEOUT, base_url=url
    )

    with pytest.raises(PacUnavailable):
        await asyncio.to_thread(gateway.stamp, signed_xml(csd), reference="invoice-1")
