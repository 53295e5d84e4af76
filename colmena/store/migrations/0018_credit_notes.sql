-- Credit notes (CFDI de Egreso, colmena.domain.credit_notes) are rows of `invoices`, so they
-- are sealed, stamped (same customid recovery), filed, emailed, listed and cancelled like an
-- Ingreso. An Egreso names the payment it refunds, the UUID of the CFDI it credits (the
-- payment's own invoice, or the CFDI global that covered it), and the cumulative refund it was
-- issued for: a payment has one Egreso per cumulative figure, however often a refund event is
-- delivered, and one Ingreso at most.
ALTER TABLE invoices
    ADD COLUMN cfdi_type text NOT NULL DEFAULT 'I' CHECK (cfdi_type IN ('I', 'E')),
    ADD COLUMN related_uuid text,
    ADD COLUMN refunded_through_minor bigint CHECK (refunded_through_minor > 0),
    ADD CONSTRAINT invoices_egreso_fields CHECK (
        (cfdi_type = 'E') = (related_uuid IS NOT NULL AND refunded_through_minor IS NOT NULL));

ALTER TABLE invoices DROP CONSTRAINT invoices_payment_id_key;
CREATE UNIQUE INDEX invoices_ingreso_payment_key ON invoices (payment_id) WHERE cfdi_type = 'I';
CREATE UNIQUE INDEX invoices_egreso_refund_key ON invoices (payment_id, refunded_through_minor)
    WHERE cfdi_type = 'E';

-- Refunds that arrived before the CFDI they credit was stamped (its PAC down, its dispute
-- open, its CFDI global not yet closed): kept here, not in a message's retries, which would run
-- out first. The `credit-notes-deferred` job queues each again once that CFDI is stamped.
CREATE TABLE deferred_credit_notes (
    payment_id      bigint      NOT NULL REFERENCES payments (id),
    refunded_minor  bigint      NOT NULL CHECK (refunded_minor > 0),
    deferred_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (payment_id, refunded_minor)
);
