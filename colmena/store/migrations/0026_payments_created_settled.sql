-- A payment created already settled: its first event now writes the payment in the status it
-- reports, in one statement (colmena.store.settlements.create_settled), where it was inserted
-- as `new` and then updated. The trail records it as it did: the creation, in `new`, then the
-- status reached, so every status a payment reaches has its `payment.<status>` row whichever
-- way its settlement took. Inserts get a trigger function of their own; updates and deletes
-- keep audit_payments.
CREATE FUNCTION audit_payments_created() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    origin text := 'provider:' || NEW.provider || ':' || NEW.provider_payment_id;
BEGIN
    PERFORM audit_row('payment', NEW.id::text, 'payment.created', NULL,
        jsonb_build_object('status', 'new', 'amount_minor', NEW.amount_minor,
            'currency', NEW.currency, 'order_id', NEW.order_id),
        origin);
    IF NEW.status <> 'new' THEN
        PERFORM audit_row('payment', NEW.id::text, 'payment.' || NEW.status,
            jsonb_build_object('status', 'new'), jsonb_build_object('status', NEW.status),
            origin);
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER payments_audit ON payments;
CREATE CONSTRAINT TRIGGER payments_audit AFTER DELETE ON payments
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_payments();
CREATE CONSTRAINT TRIGGER payments_audit_created AFTER INSERT ON payments
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_payments_created();
