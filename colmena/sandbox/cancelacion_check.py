"""What the SAT checks of a cancellation request before it files it, for the PAC sandbox and
the tests' stand-in PACs: the CancelaCfdi schema (`CANCELA_CFDI_XSD`), and the XML-DSig enveloped
signature the issuer's CSD made (satcfdi's ``signature_c14n_sha1``: inclusive C14N, SHA-1
digest of the document without its Signature, RSA-SHA1 over the canonical SignedInfo, the CSD
in X509Certificate), whose certificate must be the RfcEmisor's."""

from __future__ import annotations

import base64
import copy
import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from lxml import etree
from satcfdi.transform import SCHEMA_ROOT

from colmena.gateways.cfdi import CsdError, inspect_csd

CANCELA = "http://cancelacfd.sat.gob.mx"
DS = "http://www.w3.org/2000/09/xmldsig#"
# The SAT's cancellation request (namespace http://cancelacfd.sat.gob.mx) as its CancelaCFD
# service (the WSDL of cancelacion.sat.gob.mx) declares it since the 2022 motives: one or more
# Folios, each a Folio with UUID, Motivo and the conditional FolioSustitucion, the issuer's
# RfcEmisor and the request's Fecha, then the enveloped ds:Signature. Transcribed (satcfdi names
# the file, satcfdi/transform/schemas.py `cancelacion0`, but does not ship it); the patterns are
# those of the SAT's catalogs (RFC, UUID, c_MotivoCancelacion 01-04).
CANCELA_CFDI_XSD = """\
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"
           xmlns:ds="http://www.w3.org/2000/09/xmldsig#"
           xmlns="http://cancelacfd.sat.gob.mx"
           targetNamespace="http://cancelacfd.sat.gob.mx"
           elementFormDefault="qualified" attributeFormDefault="unqualified">
  <xs:import namespace="http://www.w3.org/2000/09/xmldsig#" schemaLocation="{dsig}"/>
  <xs:simpleType name="t_UUID">
    <xs:restriction base="xs:string">
      <xs:pattern value="{uuid}"/>
    </xs:restriction>
  </xs:simpleType>
  <xs:simpleType name="t_RFC">
    <xs:restriction base="xs:string">
      <xs:pattern value="{rfc}"/>
    </xs:restriction>
  </xs:simpleType>
  <xs:simpleType name="c_Motivo">
    <xs:restriction base="xs:string">
      <xs:enumeration value="01"/>
      <xs:enumeration value="02"/>
      <xs:enumeration value="03"/>
      <xs:enumeration value="04"/>
    </xs:restriction>
  </xs:simpleType>
  <xs:element name="Cancelacion">
    <xs:complexType>
      <xs:sequence>
        <xs:element name="Folios" maxOccurs="unbounded">
          <xs:complexType>
            <xs:sequence>
              <xs:element name="Folio">
                <xs:complexType>
                  <xs:attribute name="UUID" type="t_UUID" use="required"/>
                  <xs:attribute name="Motivo" type="c_Motivo" use="required"/>
                  <xs:attribute name="FolioSustitucion" type="t_UUID" use="optional"/>
                </xs:complexType>
              </xs:element>
            </xs:sequence>
          </xs:complexType>
        </xs:element>
        <xs:element ref="ds:Signature"/>
      </xs:sequence>
      <xs:attribute name="RfcEmisor" type="t_RFC" use="required"/>
      <xs:attribute name="Fecha" type="xs:dateTime" use="required"/>
    </xs:complexType>
  </xs:element>
</xs:schema>
"""
_UUID_PATTERN = "[a-fA-F0-9]{8}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{4}-[a-fA-F0-9]{12}"
_RFC_PATTERN = "[A-Z&amp;Ñ]{3,4}[0-9]{2}(0[1-9]|1[012])(0[1-9]|[12][0-9]|3[01])[A-Z0-9]{2}[0-9A]"
_DSIG = Path(SCHEMA_ROOT) / "www.w3.org" / "TR" / "xmldsig-core" / "xmldsig-core-schema.xsd"


class CancelacionInvalid(ValueError):
    """The request is not one the SAT would file; the message says what is wrong."""


@dataclass(frozen=True)
class Folio:
    uuid: str
    motive: str
    replacement: str | None


@dataclass(frozen=True)
class Cancelacion:
    issuer_rfc: str
    folios: tuple[Folio, ...]


@cache
def schema() -> etree.XMLSchema:
    """CancelaCfdi.xsd, its xmldsig import pointed at the copy satcfdi ships."""
    text = (
        CANCELA_CFDI_XSD.replace("{dsig}", _DSIG.as_uri())
        .replace("{uuid}", _UUID_PATTERN)
        .replace("{rfc}", _RFC_PATTERN)
    )
    return etree.XMLSchema(etree.fromstring(text.encode()))


def check_cancelacion(raw: bytes) -> Cancelacion:
    """The request's issuer and folios; CancelacionInvalid unless schema and signature hold."""
    try:
        root = etree.fromstring(raw)
    except etree.XMLSyntaxError as exc:
        raise CancelacionInvalid(f"malformed XML: {exc}") from None
    if not schema().validate(root):
        raise CancelacionInvalid(f"not valid against CancelaCfdi.xsd: {schema().error_log}")
    signature = root.find(f"{{{DS}}}Signature")  # the schema requires it
    signed_info = signature.find(f"{{{DS}}}SignedInfo") if signature is not None else None
    if signature is None or signed_info is None:
        raise CancelacionInvalid("no ds:Signature with its SignedInfo")
    unsigned = copy.deepcopy(root)
    unsigned.remove(unsigned[list(root).index(signature)])
    digest = base64.b64encode(
        hashlib.sha1(etree.tostring(unsigned, method="c14n")).digest()  # noqa: S324 (the SAT's)
    ).decode()
    if digest != signature.findtext(f".//{{{DS}}}DigestValue"):
        raise CancelacionInvalid("the digest does not match the document: altered after signing")
    der = base64.b64decode(signature.findtext(f".//{{{DS}}}X509Certificate") or "")
    certificate = x509.load_der_x509_certificate(der)
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise CancelacionInvalid("the certificate has no RSA key")
    try:
        public_key.verify(
            base64.b64decode(signature.findtext(f"{{{DS}}}SignatureValue") or ""),
            # Re-parsed on its own (serialization keeps the in-scope namespaces): lxml's C14N
            # of an element inside a parsed document writes xmlns="" on its grandchildren.
            etree.tostring(etree.fromstring(etree.tostring(signed_info)), method="c14n"),
            padding.PKCS1v15(),
            hashes.SHA1(),  # noqa: S303 (the SAT's algorithm)
        )
    except InvalidSignature:
        raise CancelacionInvalid("the signature does not verify with its certificate") from None
    try:
        rfc = inspect_csd(der).rfc
    except CsdError as exc:
        raise CancelacionInvalid(f"the certificate is no CSD: {exc}") from None
    if rfc != root.attrib["RfcEmisor"]:
        raise CancelacionInvalid(f"signed with the CSD of {rfc}, not of {root.attrib['RfcEmisor']}")
    return Cancelacion(
        issuer_rfc=root.attrib["RfcEmisor"],
        folios=tuple(
            Folio(
                uuid=folio.attrib["UUID"].upper(),
                motive=folio.attrib["Motivo"],
                replacement=folio.attrib.get("FolioSustitucion"),
            )
            for folio in root.iter(f"{{{CANCELA}}}Folio")
        ),
    )
