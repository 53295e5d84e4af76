-- A payment created already settled: its first event now writes the payment in the status it
-- reports, in one statement (colmena.store.settlements.create_settled), where it was inserted
-- as `new` and then updated. The trail records it as it did: the creation, in `new`, then the
-- status reached, so every status a payment reaches has its `payment.<status>` row whichever
-- way its settlement took.
CREATE OR REPLACE FUNCTION audit_payments() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    o jsonb;
    n jsonb;
    r payments%ROWTYPE := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    origin text := 'provider:' || r.provider || ':' || r.provider_payment_id;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        o := jsonb_build_object('status', OLD.status, 'amount_minor', OLD.amount_minor,
            'currency', OLD.currency, 'order_id', OLD.order_id);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        n := jsonb_build_object('status', NEW.status, 'amount_minor', NEW.amount_minor,
            'currency', NEW.currency, 'order_id', NEW.order_id);
    END IF;
    IF TG_OP = 'INSERT' AND NEW.status <> 'new' THEN
        PERFORM audit_row('payment', r.id::text, 'payment.created', NULL,
            n || jsonb_build_object('status', 'new'), origin);
        PERFORM audit_row('payment', r.id::text, 'payment.' || NEW.status,
            jsonb_build_object('status', 'new'), jsonb_build_object('status', NEW.status),
            origin);
        RETURN NULL;
    END IF;
    PERFORM audit_row('payment', r.id::text,
        audit_action('payment', TG_OP,
            CASE WHEN TG_OP = 'UPDATE' AND OLD.status IS DISTINCT FROM NEW.status
                 THEN NEW.status END),
        o, n, origin);
    RETURN NULL;
END $$;
