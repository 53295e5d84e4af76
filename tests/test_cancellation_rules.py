"""The cancellation rules of colmena.domain.cancellation, without services: who needs the
receiver's acceptance (RMF 2.7.1.35), the receiver's deadline (RMF 2.7.1.34), bad requests,
and where each answer of the SAT's status service leads."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from colmena.domain.cancellation import (
    LAST_POLL,
    MEXICO_CITY,
    CancellationRefused,
    Motive,
    SatStatus,
    State,
    acceptance_deadline,
    cancellation_request,
    decide,
    disagreement,
    needs_acceptance,
    poll_delay,
)

UUID = "8E1C1B4C-6A0D-4E43-9A0B-2D0C5D8A7F11"
OTHER = "1F0E6B1A-7E4D-4C2B-8A5F-3B9D2C1E0A77"
# A Wednesday noon in Mexico City.
WEDNESDAY = dt.datetime(2026, 3, 4, 12, 0, tzinfo=MEXICO_CITY)


def judge(**changes: object) -> bool:
    values: dict[str, object] = {
        "total_mxn": Decimal("1798.55"),
        "receiver_rfc": "URE180429TM6",
        "voucher_type": "I",
        "issued_at": WEDNESDAY,
        "requested_at": WEDNESDAY + dt.timedelta(days=5),
        **changes,
    }
    return needs_acceptance(**values)  # type: ignore[arg-type]


def test_an_ingreso_over_1000_to_a_named_receiver_after_the_window_needs_acceptance() -> None:
    assert judge() is True


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"total_mxn": Decimal("1000.00")}, "fracción I: up to $1,000.00"),
        ({"voucher_type": "E"}, "fracción III: an Egreso"),
        ({"receiver_rfc": "XAXX010101000"}, "fracción VII: público en general"),
        ({"receiver_rfc": "XEXX010101000"}, "fracción VIII: resident abroad"),
        ({"requested_at": WEDNESDAY + dt.timedelta(hours=30)}, "fracción IX: next business day"),
    ],
)
def test_the_rmf_exceptions_need_no_acceptance(change: dict[str, object], why: str) -> None:
    assert judge(**change) is False, why


def test_the_window_after_a_friday_issue_runs_through_monday_not_saturday() -> None:
    friday = dt.datetime(2026, 3, 6, 18, 0, tzinfo=MEXICO_CITY)
    monday_evening = dt.datetime(2026, 3, 9, 23, 59, tzinfo=MEXICO_CITY)
    tuesday = dt.datetime(2026, 3, 10, 0, 1, tzinfo=MEXICO_CITY)
    assert judge(issued_at=friday, requested_at=monday_evening) is False
    assert judge(issued_at=friday, requested_at=tuesday) is True


def test_the_receiver_has_three_business_days() -> None:
    thursday = dt.datetime(2026, 3, 5, 9, 0, tzinfo=MEXICO_CITY)
    # Friday, Monday, Tuesday: over at the end of Tuesday.
    assert acceptance_deadline(thursday) == dt.datetime(2026, 3, 11, 0, 0, tzinfo=MEXICO_CITY)


def test_motive_01_needs_a_replacement_and_the_others_refuse_one() -> None:
    with pytest.raises(CancellationRefused, match="needs the UUID of the replacing CFDI"):
        cancellation_request(
            invoice_id=1, uuid=UUID, motive="01", replacement_uuid=None, current=None
        )
    with pytest.raises(CancellationRefused, match="FolioSustitucion is only for 01"):
        cancellation_request(
            invoice_id=1, uuid=UUID, motive="02", replacement_uuid=OTHER, current=None
        )
    with pytest.raises(CancellationRefused, match="not a UUID"):
        cancellation_request(
            invoice_id=1, uuid=UUID, motive="01", replacement_uuid="nope", current=None
        )
    with pytest.raises(CancellationRefused, match="cannot replace itself"):
        cancellation_request(
            invoice_id=1, uuid=UUID, motive="01", replacement_uuid=UUID.lower(), current=None
        )
    request = cancellation_request(
        invoice_id=1, uuid=UUID, motive="01", replacement_uuid=OTHER.lower(), current=None
    )
    assert (request.motive, request.replacement_uuid) == (Motive.ERRORS_WITH_RELATION, OTHER)
    plain = cancellation_request(
        invoice_id=1, uuid=UUID, motive="03", replacement_uuid=None, current=None
    )
    assert (plain.motive, plain.replacement_uuid) == (Motive.NOT_CARRIED_OUT, None)


def test_an_unstamped_invoice_or_one_already_cancelling_is_refused() -> None:
    with pytest.raises(CancellationRefused, match="is not stamped"):
        cancellation_request(
            invoice_id=7, uuid=None, motive="02", replacement_uuid=None, current=None
        )
    for state in (State.IN_PROCESS, State.CANCELLED, State.EXPIRED):
        with pytest.raises(CancellationRefused, match="already"):
            cancellation_request(
                invoice_id=7, uuid=UUID, motive="02", replacement_uuid=None, current=state
            )
    again = cancellation_request(
        invoice_id=7, uuid=UUID, motive="02", replacement_uuid=None, current=State.REJECTED
    )
    assert again.motive is Motive.ERRORS_WITHOUT_RELATION


def sat(estado: str, estatus: str = "", cancelable: str = "Cancelable con aceptación") -> SatStatus:
    return SatStatus("S - Comprobante obtenido satisfactoriamente.", estado, cancelable, estatus)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (sat("Cancelado", "Cancelado sin aceptación"), State.CANCELLED),
        (sat("Cancelado", "Cancelado con aceptación"), State.CANCELLED),
        (sat("Cancelado", "Plazo vencido"), State.EXPIRED),
        (sat("Vigente", "En proceso"), State.AWAITING_ACCEPTANCE),
        (sat("Vigente", "Solicitud rechazada"), State.REJECTED),
        (sat("Vigente", "", "No cancelable"), State.REFUSED),
        (sat("Vigente", ""), State.IN_PROCESS),
        (
            SatStatus("N - 602: Comprobante no encontrado.", "No Encontrado", "", ""),
            State.IN_PROCESS,
        ),
    ],
)
def test_each_status_answer_leads_to_its_state(status: SatStatus, expected: State) -> None:
    assert decide(State.IN_PROCESS, status).state is expected


def test_polls_back_off_to_a_ceiling() -> None:
    delays = [poll_delay(n) for n in range(12)]
    assert delays == sorted(delays) and delays[0] < delays[3] and delays[-1] == LAST_POLL


def test_disagreements_between_colmena_and_the_sat() -> None:
    assert disagreement(None, "in_force") is None
    assert disagreement(State.CANCELLED, "cancelled") is None
    assert disagreement(State.AWAITING_ACCEPTANCE, "cancelling") is None
    assert disagreement(None, "cancelled") == "in force in colmena, cancelled at the SAT"
    assert disagreement(State.EXPIRED, "in_force") == "cancelled in colmena, in_force at the SAT"
    assert disagreement(State.REJECTED, "not_found") == "the SAT does not know this UUID"
    assert "next poll" in (disagreement(State.IN_PROCESS, "cancelled") or "")
