-- Disputes and unsigned payment hints.
--
-- A dispute (Stripe charge.dispute.created, Mercado Pago in_mediation) suspends the license of
-- the payment (its links stop working, unsent emails wait) and holds its invoice (not stamped
-- or emailed): both come back when the dispute is won; a lost one revokes and cancels as a
-- chargeback always did. Suspension and hold are set in the transaction that applied the
-- payment status, so no download or stamp slips between the decision and its effect.
ALTER TABLE licenses
    ADD COLUMN suspended_at     timestamptz,
    ADD COLUMN suspended_reason text;

ALTER TABLE invoices
    ADD COLUMN held_at     timestamptz,
    ADD COLUMN hold_reason text;

-- Mercado Pago IPN hints (unsigned `?topic=payment&id=...`) are stored under the key
-- ipn:<topic>:<id>:<window>, so one id costs at most one API fetch per window; the ingress
-- counts the hints of the last minute against a global budget with this index.
CREATE INDEX inbox_hints_idx ON inbox (received_at)
    WHERE provider = 'mercadopago' AND event_key LIKE 'ipn:%';
