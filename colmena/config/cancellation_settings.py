"""Settings for cancelling CFDI at the SAT: the SAT's status service, and the motive a refund
cancels with. The cancellation request itself goes through the stamping PAC (COLMENA_PAC_*)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class CancellationSettings(BaseModel):
    sat_status_url: str = Field(
        default="https://consultaqr.facturaelectronica.sat.gob.mx",
        description="host of the SAT's ConsultaCFDIService (the status of a stamped CFDI)",
    )
    sat_status_timeout_seconds: float = Field(
        default=15.0, gt=0, le=120, description="per call to the SAT's status service"
    )
    cfdi_refund_cancel_motive: Literal["02", "03"] = Field(
        default="03",
        description="SAT motive a full refund cancels with: 03 the sale did not take place",
    )
