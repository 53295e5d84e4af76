-- Which PAC an invoice is stamped at, for the failover PAC (COLMENA_PAC_FAILOVER_PROVIDER).
--
-- pac_provider is the PAC the invoice's attempts go to; pac_uncertain counts the attempts sent
-- there without a definite "not stamped" answer (a timeout, a lost connection, a worker that
-- died mid-call). Each attempt adds one before its call and takes it back only on a definite
-- "not stamped" (5xx, no connection). The invoice may move to the other PAC only while the
-- count is 0, decided under the row lock, so a PAC that may hold its stamp is never left for
-- another. Invoices already tried before this migration count their attempts as uncertain.
ALTER TABLE invoices
    ADD COLUMN pac_provider  text,
    ADD COLUMN pac_uncertain integer NOT NULL DEFAULT 0 CHECK (pac_uncertain >= 0);

UPDATE invoices SET pac_uncertain = attempts WHERE uuid IS NULL AND attempts > 0;
