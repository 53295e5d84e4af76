"""SW Sapien's stamping endpoint for the stamping bench: colmena's PAC sandbox on a port.

The sandbox (colmena.sandbox.pac) checks each CFDI as a PAC does (schema, seal) and answers with
a TimbreFiscalDigital in SW's wire format. It runs in the bench's process, so its checks and
signing share the CPU with the worker, as the figures say.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from aiohttp import web
from satcfdi.models import Signer

from bench.standins.csd import ISSUER_NAME, ISSUER_RFC, RECEIVER_NAME, RECEIVER_RFC
from colmena.domain.invoicing import Concept, Invoice, Issuer, Receiver
from colmena.sandbox.pac import SANDBOX_TOKEN, pac_app
from colmena.sandbox.pac_ledger import PacLedger


@dataclass
class StandInSW:
    """Start with `await pac.start()`; pass `pac.url` and `pac.token` to the gateway."""

    sat_signer: Signer
    token: str = SANDBOX_TOKEN
    url: str = ""
    ledger: PacLedger = field(init=False)
    _runner: web.AppRunner | None = None

    def __post_init__(self) -> None:
        self.ledger = PacLedger(signer=self.sat_signer)

    async def start(self) -> str:
        self._runner = web.AppRunner(pac_app(self.ledger), handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def sample_invoice(*, folio: str = "1") -> Invoice:
    """An invoice of two concepts between the stand-in issuer and receiver."""
    return Invoice(
        issuer=Issuer(rfc=ISSUER_RFC, name=ISSUER_NAME, regime="601", postal_code="42501"),
        receiver=Receiver(
            rfc=RECEIVER_RFC, name=RECEIVER_NAME, regime="601", postal_code="86991", cfdi_use="G03"
        ),
        series="A",
        folio=folio,
        payment_form="03",
        payment_method="PUE",
        concepts=(
            Concept(
                product_key="81112100",
                unit_key="E48",
                description="Suscripción mensual",
                unit_price=Decimal("1250.50"),
            ),
            Concept(
                product_key="81112100",
                unit_key="E48",
                description="Soporte",
                unit_price=Decimal("99.99"),
                quantity=Decimal(3),
            ),
        ),
    )
