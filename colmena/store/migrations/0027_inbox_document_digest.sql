-- The SHA-256 of each event's JSON text as it arrived (written by the ingress with the event).
-- The ingress's own publish of a Stripe event's message carries that text, so the worker can
-- settle the event without reading it first; the settling statement writes only if the stored
-- digest is the carried text's, so a message with any other text settles nothing that way
-- (colmena.store.settlements.create_settled). NULL for events stored before: theirs are read.
ALTER TABLE inbox ADD COLUMN document_sha256 bytea;
