"""CFDI cancellation rules: who may ask, which invoices need the receiver's acceptance, and how
the SAT's status service moves a cancellation along. Pure: plain data in, decisions out.

The states, and what moves a cancellation between them (the table is `_SAT_STATES`):

```
requested --PAC accepts (201, or 202 "previamente cancelado")--> in_process
requested --PAC refuses the request for good (203-209, bad signature...)--> refused
in_process | awaiting_acceptance --SAT status service--> awaiting_acceptance (En proceso)
                                                       | cancelled (Cancelado sin/con aceptación)
                                                       | expired   (Plazo vencido: the receiver
                                                                    did not answer, tacit yes)
                                                       | rejected  (Solicitud rechazada)
                                                       | refused   (No cancelable)
```

`cancelled` and `expired` both leave the CFDI cancelled at the SAT; `rejected` and `refused`
leave it in force (vigente), and an operator may ask again after fixing the cause.

The fiscal rules, cited where they are applied:

- CFF art. 29-A, 4th paragraph: a CFDI is cancelled only when its receiver accepts, except in
  the cases the RMF lists. RMF 2025 rule 2.7.1.35 ("Cancelación de CFDI sin aceptación del
  receptor") lists them; those colmena can meet: I. a total of up to $1,000.00 MXN; III. an
  Egreso; VII. público en general (rule 2.7.1.21, RFC XAXX010101000); VIII. residents abroad
  (rule 2.7.1.23, RFC XEXX010101000); IX. a cancellation made within the business day after
  issuance.
- RMF rule 2.7.1.34: the receiver answers within three days of the request (business days,
  CFF art. 12), and silence counts as acceptance: the SAT then reports "Plazo vencido".
- Anexo 20 / the cancellation service: motive 01 (errors, with a relation) names the
  replacing CFDI in FolioSustitucion; motives 02 and 03 carry none.
"""

from __future__ import annotations

import datetime as dt
import uuid as uuid_module
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from colmena.errors import PermanentError

MEXICO_CITY = ZoneInfo("America/Mexico_City")
PUBLICO_EN_GENERAL_RFC = "XAXX010101000"
EXTRANJERO_RFC = "XEXX010101000"
NO_ACCEPTANCE_LIMIT_MXN = Decimal("1000.00")
ACCEPTANCE_BUSINESS_DAYS = 3
# PAC answers (the SAT's EstatusUUID of the cancellation service) that mean "the request is
# filed": 201 filed now, 202 the folio was already cancelled (a repeat of our own request).
FILED_CODES = frozenset({"201", "202"})
# How often the status service is asked: doubling from the first delay up to the last.
FIRST_POLL = dt.timedelta(minutes=5)
LAST_POLL = dt.timedelta(hours=6)


class Motive(StrEnum):
    """SAT cancellation motives colmena offers (04 belongs to the global invoice's flow)."""

    ERRORS_WITH_RELATION = "01"
    ERRORS_WITHOUT_RELATION = "02"
    NOT_CARRIED_OUT = "03"


class State(StrEnum):
    REQUESTED = "requested"
    IN_PROCESS = "in_process"
    AWAITING_ACCEPTANCE = "awaiting_acceptance"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REJECTED = "rejected"
    REFUSED = "refused"


OPEN_STATES = frozenset({State.REQUESTED, State.IN_PROCESS, State.AWAITING_ACCEPTANCE})
CANCELLED_STATES = frozenset({State.CANCELLED, State.EXPIRED})
# After these an operator may ask again (the CFDI is still in force at the SAT).
RETRYABLE_STATES = frozenset({State.REJECTED, State.REFUSED})


class CancellationRefused(PermanentError):
    """A cancellation that cannot be asked for; the message says why, for an operator."""


@dataclass(frozen=True)
class CancellationRequest:
    motive: Motive
    replacement_uuid: str | None


def _uuid(value: str, what: str) -> str:
    try:
        return str(uuid_module.UUID(value)).upper()
    except ValueError:
        raise CancellationRefused(f"{what} {value!r} is not a UUID") from None


def cancellation_request(
    *,
    invoice_id: int,
    uuid: str | None,
    motive: str,
    replacement_uuid: str | None,
    current: State | None,
) -> CancellationRequest:
    """The request to file for an invoice, or CancellationRefused saying why not."""
    if uuid is None:
        raise CancellationRefused(
            f"invoice {invoice_id} is not stamped: there is nothing to cancel at the SAT"
        )
    if current is not None and current not in RETRYABLE_STATES:
        raise CancellationRefused(f"invoice {invoice_id}: a cancellation is already {current}")
    try:
        chosen = Motive(motive)
    except ValueError:
        raise CancellationRefused(
            f"motive {motive!r} is not one of {', '.join(m.value for m in Motive)}"
        ) from None
    if chosen is Motive.ERRORS_WITH_RELATION:
        if not replacement_uuid:
            raise CancellationRefused(
                "motive 01 needs the UUID of the replacing CFDI (--replacement): the SAT "
                "requires FolioSustitucion"
            )
        replacement = _uuid(replacement_uuid, "replacement")
        if replacement == uuid.upper():
            raise CancellationRefused("a CFDI cannot replace itself")
        return CancellationRequest(chosen, replacement)
    if replacement_uuid:
        raise CancellationRefused(
            f"motive {chosen.value} carries no replacement: FolioSustitucion is only for 01"
        )
    return CancellationRequest(chosen, None)


def next_business_day_end(day: dt.date, days: int = 1) -> dt.datetime:
    """The end (Mexico City) of the `days`-th business day after `day`; Saturdays and Sundays
    are skipped, official holidays are not known here (so a window is never judged longer)."""
    current = day
    left = days
    while left:
        current += dt.timedelta(days=1)
        if current.weekday() < 5:
            left -= 1
    return dt.datetime.combine(current + dt.timedelta(days=1), dt.time(), tzinfo=MEXICO_CITY)


def needs_acceptance(
    *,
    total_mxn: Decimal,
    receiver_rfc: str,
    voucher_type: str,
    issued_at: dt.datetime,
    requested_at: dt.datetime,
) -> bool:
    """Whether the SAT waits for the receiver's answer before cancelling (RMF 2.7.1.35)."""
    if total_mxn <= NO_ACCEPTANCE_LIMIT_MXN:  # fracción I
        return False
    if voucher_type == "E":  # fracción III
        return False
    if receiver_rfc in (PUBLICO_EN_GENERAL_RFC, EXTRANJERO_RFC):  # fracciones VII y VIII
        return False
    issued_day = issued_at.astimezone(MEXICO_CITY).date()
    return requested_at >= next_business_day_end(issued_day)  # fracción IX


def acceptance_deadline(requested_at: dt.datetime) -> dt.datetime:
    """When the receiver's three business days (RMF 2.7.1.34) are over."""
    day = requested_at.astimezone(MEXICO_CITY).date()
    return next_business_day_end(day, ACCEPTANCE_BUSINESS_DAYS)


@dataclass(frozen=True)
class SatStatus:
    """One answer of the SAT's ConsultaCFDIService, field for field."""

    codigo_estatus: str
    estado: str
    es_cancelable: str
    estatus_cancelacion: str

    @property
    def found(self) -> bool:
        return self.codigo_estatus.startswith("S")


@dataclass(frozen=True)
class Decision:
    state: State
    reason: str


# (Estado, EstatusCancelacion) -> state, for a CFDI the SAT knows.
_SAT_STATES: dict[tuple[str, str], State] = {
    ("Cancelado", "Cancelado sin aceptación"): State.CANCELLED,
    ("Cancelado", "Cancelado con aceptación"): State.CANCELLED,
    ("Cancelado", "Plazo vencido"): State.EXPIRED,
    ("Cancelado", ""): State.CANCELLED,
    ("Vigente", "En proceso"): State.AWAITING_ACCEPTANCE,
    ("Vigente", "Solicitud rechazada"): State.REJECTED,
}


def decide(current: State, status: SatStatus) -> Decision:
    """Where the SAT's answer takes an open cancellation; the same state means "ask later"."""
    if not status.found:
        # The SAT receives a stamp from the PAC within 72 h; until then it answers "N - 602".
        return Decision(current, f"the SAT does not know the CFDI yet ({status.codigo_estatus})")
    state = _SAT_STATES.get((status.estado, status.estatus_cancelacion))
    if state is not None:
        return Decision(state, f"{status.estado}: {status.estatus_cancelacion or '-'}")
    if status.estado == "Vigente" and status.es_cancelable == "No cancelable":
        return Decision(
            State.REFUSED,
            "the SAT says No cancelable: a CFDI related to it is in force; cancel that first",
        )
    return Decision(current, f"{status.estado}: the request is not processed yet")


def poll_delay(polls: int) -> dt.timedelta:
    """Doubling from FIRST_POLL to LAST_POLL; the receiver has days, the SAT takes minutes."""
    return min(LAST_POLL, FIRST_POLL * (2 ** min(polls, 16)))


def state_of_sat(status: SatStatus) -> str:
    """colmena's word for what the SAT says of a CFDI, for `invoices verify`."""
    if not status.found:
        return "not_found"
    if status.estado == "Cancelado":
        return "cancelled"
    if status.estatus_cancelacion == "En proceso":
        return "cancelling"
    return "in_force"


def disagreement(cancellation: State | None, sat_state: str) -> str | None:
    """What is wrong when colmena's record of a CFDI and the SAT's differ; None when they agree.

    `sat_state` is `state_of_sat`'s word. An open cancellation agrees with any answer but a
    final one (the next poll records that).
    """
    if sat_state == "not_found":
        return "the SAT does not know this UUID"
    if cancellation in CANCELLED_STATES:
        return None if sat_state == "cancelled" else f"cancelled in colmena, {sat_state} at the SAT"
    if cancellation in OPEN_STATES:
        if sat_state == "cancelled":
            return "cancelled at the SAT; colmena records it on its next poll"
        return None
    if sat_state == "in_force":
        return None
    return f"in force in colmena, {sat_state} at the SAT"
