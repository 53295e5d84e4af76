"""What Mercado Pago's test environment decides from a test card's holder name.

Mercado Pago's "Test cards" page: any test card number works, and the cardholder's name picks
the outcome. The pairs below are its table with the `status` / `status_detail` each outcome has
in the payments API ("Payment creation results"). CONT, documented as a pending payment, is a
card payment still being processed: `in_process` / `pending_contingency`. UNSU ("not
supported") and TEST ("amount rules") decide nothing by themselves and are not offered.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str
    status_detail: str


APPROVED = Outcome("approved", "accredited")

HOLDER_OUTCOMES: dict[str, Outcome] = {
    "APRO": APPROVED,
    "OTHE": Outcome("rejected", "cc_rejected_other_reason"),
    "CONT": Outcome("in_process", "pending_contingency"),
    "CALL": Outcome("rejected", "cc_rejected_call_for_authorize"),
    "FUND": Outcome("rejected", "cc_rejected_insufficient_amount"),
    "SECU": Outcome("rejected", "cc_rejected_bad_filled_security_code"),
    "EXPI": Outcome("rejected", "cc_rejected_bad_filled_date"),
    "FORM": Outcome("rejected", "cc_rejected_bad_filled_other"),
    "CARD": Outcome("rejected", "cc_rejected_bad_filled_card_number"),
    "INST": Outcome("rejected", "cc_rejected_invalid_installments"),
    "DUPL": Outcome("rejected", "cc_rejected_duplicated_payment"),
    "LOCK": Outcome("rejected", "cc_rejected_card_disabled"),
    "CTNA": Outcome("rejected", "cc_rejected_card_type_not_allowed"),
    "ATTE": Outcome("rejected", "cc_rejected_max_attempts"),
    "BLAC": Outcome("rejected", "cc_rejected_blacklist"),
}

# An authorized card payment (`capture: false`) waits to be captured.
AUTHORIZED = Outcome("authorized", "pending_capture")
# Offline (cash) methods of the sandbox's Mexican seller: pending until the buyer pays.
OFFLINE_METHODS = {"oxxo": "ticket", "paycash": "ticket"}
WAITING_PAYMENT = Outcome("pending", "pending_waiting_payment")
# The card brand a test card number's first digit names (Mercado Pago's test cards).
CARD_BRANDS = {"3": "amex", "4": "visa", "5": "master"}


def holder_outcome(holder_name: str) -> Outcome | None:
    """The outcome the test environment gives a holder name; None for a name it does not know.

    The first word decides, case aside, so a first and last name ("APRO Test") works too.
    """
    words = holder_name.split()
    return HOLDER_OUTCOMES.get(words[0].upper()) if words else None
