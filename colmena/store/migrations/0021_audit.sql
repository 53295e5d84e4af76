-- The audit trail: every change of money, license, invoice, plan and provider-key state, and
-- every operator action, as an append-only row saying who, what, when, before/after and why.
--
-- Triggers write the rows, so no code path can forget one and the payment path sends no extra
-- statement. They are deferred constraint triggers: they run at COMMIT, when the transaction
-- has said who it is (`colmena.audit_actor`, `colmena.audit_cause`, set by
-- colmena.store.audit.attribute) and, on the payment path, which provider event it applies
-- (set by the payment_events trigger below). Only chosen columns are recorded: never a
-- ciphertext, token hash, license key, XML or PDF, nor a customer's email (a row that can
-- never be edited holds no personal data beyond ids).
--
-- The hash chain lives in audit_seals, appended by colmena's sealing step (the `audit-seal`
-- job every minute, and before every verify or export) rather than by each writer: chaining in
-- the trigger would serialise every payment on one chain-head row lock. Both tables refuse
-- UPDATE, DELETE and TRUNCATE by trigger; the runtime role is also never granted them
-- (`colmena db grant-runtime`).

CREATE TABLE audit_events (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The writing transaction (set by trigger, never by the writer): the sealing step's
    -- horizon is "every transaction older than the oldest one still running".
    xact         xid8        NOT NULL,
    recorded_at  timestamptz NOT NULL,
    actor        text        NOT NULL,
    action       text        NOT NULL,
    subject_kind text        NOT NULL,
    subject_id   text        NOT NULL,
    before       jsonb,
    after        jsonb,
    cause        text        NOT NULL
);

-- The sealer walks this index from the last run's horizon in (xact, id) order: a run's work
-- is the rows written since, however many, read once and never sorted.
CREATE INDEX audit_events_xact_idx ON audit_events (xact, id);
CREATE INDEX audit_events_subject_idx ON audit_events (subject_kind, subject_id, id DESC);
CREATE INDEX audit_events_recorded_idx ON audit_events (recorded_at);

-- One chain link per sealed event, in seal order (seq 1, 2, ...): hash = SHA-256(version ||
-- prev_hash || the event's canonical bytes), see colmena.domain.audit_chain. horizon is the oldest running
-- transaction when the link's batch was sealed: every event of an older transaction is sealed
-- by then, so the next run only looks at newer ones.
CREATE TABLE audit_seals (
    seq       bigint      PRIMARY KEY CHECK (seq >= 1),
    event_id  bigint      NOT NULL UNIQUE,
    prev_hash bytea       NOT NULL CHECK (length(prev_hash) = 32),
    hash      bytea       NOT NULL UNIQUE CHECK (length(hash) = 32),
    horizon   xid8        NOT NULL,
    sealed_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION audit_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.xact := pg_current_xact_id();
    NEW.recorded_at := clock_timestamp();
    RETURN NEW;
END $$;

CREATE TRIGGER audit_events_stamp BEFORE INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_stamp();

CREATE FUNCTION audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_refuse();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse();
CREATE TRIGGER audit_seals_append_only BEFORE UPDATE OR DELETE ON audit_seals
    FOR EACH ROW EXECUTE FUNCTION audit_refuse();
CREATE TRIGGER audit_seals_no_truncate BEFORE TRUNCATE ON audit_seals
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse();

-- One audit row. For an UPDATE only the recorded columns that changed are kept, before and
-- after; nothing is written when none did. Who: the transaction's attributed actor, else the
-- database session (role and application name). Why: the attributed cause, else what the row
-- itself says (row_cause), else 'unattributed'.
CREATE FUNCTION audit_row(
    kind text, subject text, action text, old_values jsonb, new_values jsonb, row_cause text
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    was jsonb := old_values;
    now_is jsonb := new_values;
BEGIN
    IF old_values IS NOT NULL AND new_values IS NOT NULL THEN
        SELECT jsonb_object_agg(key, old_values -> key), jsonb_object_agg(key, new_values -> key)
          INTO was, now_is
          FROM jsonb_object_keys(new_values) AS key
         WHERE old_values -> key IS DISTINCT FROM new_values -> key;
        IF now_is IS NULL THEN
            RETURN;
        END IF;
    END IF;
    INSERT INTO audit_events (actor, action, subject_kind, subject_id, before, after, cause)
    VALUES (
        coalesce(
            nullif(current_setting('colmena.audit_actor', true), ''),
            'db:' || session_user
                || coalesce('/' || nullif(current_setting('application_name', true), ''), '')),
        action, kind, subject, was, now_is,
        coalesce(nullif(current_setting('colmena.audit_cause', true), ''), row_cause,
                 'unattributed'));
END $$;

-- The action of a change: <kind>.created / .deleted, or the state the UPDATE reached.
CREATE FUNCTION audit_action(kind text, op text, reached text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT kind || '.' || CASE op WHEN 'INSERT' THEN 'created' WHEN 'DELETE' THEN 'deleted'
                                  ELSE coalesce(reached, 'changed') END
$$;

-- The payment path names its cause without a statement of its own: the payment_events row
-- it inserts for every provider status names the inbox event, and the deferred audit rows of
-- its transaction (payment, order, suspension, hold) read it at commit.
CREATE FUNCTION audit_payment_event_cause() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.inbox_id IS NOT NULL
       AND coalesce(current_setting('colmena.audit_cause', true), '') = '' THEN
        PERFORM set_config('colmena.audit_cause',
            (SELECT 'event:' || provider || ':' || event_key FROM inbox WHERE id = NEW.inbox_id),
            true);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER payment_events_audit_cause AFTER INSERT ON payment_events
    FOR EACH ROW EXECUTE FUNCTION audit_payment_event_cause();

-- payments: status and money.
CREATE FUNCTION audit_payments() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    o jsonb;
    n jsonb;
    r payments%ROWTYPE := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        o := jsonb_build_object('status', OLD.status, 'amount_minor', OLD.amount_minor,
            'currency', OLD.currency, 'order_id', OLD.order_id);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        n := jsonb_build_object('status', NEW.status, 'amount_minor', NEW.amount_minor,
            'currency', NEW.currency, 'order_id', NEW.order_id);
    END IF;
    PERFORM audit_row('payment', r.id::text,
        audit_action('payment', TG_OP,
            CASE WHEN TG_OP = 'UPDATE' AND OLD.status IS DISTINCT FROM NEW.status
                 THEN NEW.status END),
        o, n, 'provider:' || r.provider || ':' || r.provider_payment_id);
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER payments_audit AFTER INSERT OR DELETE ON payments
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_payments();
CREATE CONSTRAINT TRIGGER payments_audit_update AFTER UPDATE ON payments
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          OR OLD.amount_minor IS DISTINCT FROM NEW.amount_minor
          OR OLD.currency IS DISTINCT FROM NEW.currency
          OR OLD.order_id IS DISTINCT FROM NEW.order_id)
    EXECUTE FUNCTION audit_payments();

-- licenses: issue, revoke, suspend, reinstate (never the key or the package paths).
CREATE FUNCTION audit_licenses() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    o jsonb;
    n jsonb;
    r licenses%ROWTYPE := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    reached text;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        o := jsonb_build_object('payment_id', OLD.payment_id, 'product_ref', OLD.product_ref,
            'edition', OLD.edition, 'seats', OLD.seats, 'expires_at', OLD.expires_at,
            'revoked_at', OLD.revoked_at, 'revoked_reason', OLD.revoked_reason,
            'suspended_at', OLD.suspended_at, 'suspended_reason', OLD.suspended_reason);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        n := jsonb_build_object('payment_id', NEW.payment_id, 'product_ref', NEW.product_ref,
            'edition', NEW.edition, 'seats', NEW.seats, 'expires_at', NEW.expires_at,
            'revoked_at', NEW.revoked_at, 'revoked_reason', NEW.revoked_reason,
            'suspended_at', NEW.suspended_at, 'suspended_reason', NEW.suspended_reason);
    END IF;
    IF TG_OP = 'INSERT' THEN
        reached := 'issued';
    ELSIF TG_OP = 'UPDATE' THEN
        reached := CASE
            WHEN OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL THEN 'revoked'
            WHEN OLD.suspended_at IS NULL AND NEW.suspended_at IS NOT NULL THEN 'suspended'
            WHEN OLD.suspended_at IS NOT NULL AND NEW.suspended_at IS NULL THEN 'reinstated'
        END;
    END IF;
    PERFORM audit_row('license', r.id::text,
        CASE WHEN TG_OP = 'INSERT' THEN 'license.issued'
             ELSE audit_action('license', TG_OP, reached) END,
        o, n, 'payment:' || r.payment_id);
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER licenses_audit AFTER INSERT OR DELETE ON licenses
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_licenses();
CREATE CONSTRAINT TRIGGER licenses_audit_update AFTER UPDATE ON licenses
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
          OR OLD.revoked_reason IS DISTINCT FROM NEW.revoked_reason
          OR OLD.suspended_at IS DISTINCT FROM NEW.suspended_at
          OR OLD.suspended_reason IS DISTINCT FROM NEW.suspended_reason
          OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
          OR OLD.seats IS DISTINCT FROM NEW.seats
          OR OLD.edition IS DISTINCT FROM NEW.edition
          OR OLD.product_ref IS DISTINCT FROM NEW.product_ref
          OR OLD.payment_id IS DISTINCT FROM NEW.payment_id)
    EXECUTE FUNCTION audit_licenses();

-- invoices (Ingreso and Egreso): status, stamp, money, hold and cancellation request (never
-- the XML, the PDF or the receiver's data).
CREATE FUNCTION audit_invoices() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    o jsonb;
    n jsonb;
    r invoices%ROWTYPE := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    reached text;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        o := jsonb_build_object('payment_id', OLD.payment_id, 'cfdi_type', OLD.cfdi_type,
            'status', OLD.status, 'series', OLD.series, 'folio', OLD.folio,
            'total', OLD.total, 'currency', OLD.currency, 'uuid', OLD.uuid,
            'related_uuid', OLD.related_uuid, 'refunded_through_minor', OLD.refunded_through_minor,
            'held_at', OLD.held_at, 'hold_reason', OLD.hold_reason,
            'cancel_requested_at', OLD.cancel_requested_at);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        n := jsonb_build_object('payment_id', NEW.payment_id, 'cfdi_type', NEW.cfdi_type,
            'status', NEW.status, 'series', NEW.series, 'folio', NEW.folio,
            'total', NEW.total, 'currency', NEW.currency, 'uuid', NEW.uuid,
            'related_uuid', NEW.related_uuid, 'refunded_through_minor', NEW.refunded_through_minor,
            'held_at', NEW.held_at, 'hold_reason', NEW.hold_reason,
            'cancel_requested_at', NEW.cancel_requested_at);
    END IF;
    IF TG_OP = 'UPDATE' THEN
        reached := CASE
            WHEN OLD.status IS DISTINCT FROM NEW.status THEN NEW.status
            WHEN OLD.held_at IS NULL AND NEW.held_at IS NOT NULL THEN 'held'
            WHEN OLD.held_at IS NOT NULL AND NEW.held_at IS NULL THEN 'released'
        END;
    END IF;
    PERFORM audit_row('invoice', r.id::text, audit_action('invoice', TG_OP, reached),
        o, n, 'payment:' || r.payment_id);
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER invoices_audit AFTER INSERT OR DELETE ON invoices
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_invoices();
CREATE CONSTRAINT TRIGGER invoices_audit_update AFTER UPDATE ON invoices
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          OR OLD.total IS DISTINCT FROM NEW.total
          OR OLD.currency IS DISTINCT FROM NEW.currency
          OR OLD.uuid IS DISTINCT FROM NEW.uuid
          OR OLD.held_at IS DISTINCT FROM NEW.held_at
          OR OLD.hold_reason IS DISTINCT FROM NEW.hold_reason
          OR OLD.cancel_requested_at IS DISTINCT FROM NEW.cancel_requested_at
          OR OLD.payment_id IS DISTINCT FROM NEW.payment_id
          OR OLD.series IS DISTINCT FROM NEW.series
          OR OLD.folio IS DISTINCT FROM NEW.folio)
    EXECUTE FUNCTION audit_invoices();

-- invoice_cancellations: the request and every state the PAC and the SAT move it to (never the
-- acuse).
CREATE FUNCTION audit_invoice_cancellations() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    o jsonb;
    n jsonb;
    r invoice_cancellations%ROWTYPE := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        o := jsonb_build_object('state', OLD.state, 'motive', OLD.motive,
            'replacement_uuid', OLD.replacement_uuid, 'source', OLD.source,
            'needs_acceptance', OLD.needs_acceptance, 'requested_at', OLD.requested_at,
            'pac_code', OLD.pac_code, 'sat_estado', OLD.sat_estado,
            'sat_estatus', OLD.sat_estatus, 'finished_at', OLD.finished_at);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        n := jsonb_build_object('state', NEW.state, 'motive', NEW.motive,
            'replacement_uuid', NEW.replacement_uuid, 'source', NEW.source,
            'needs_acceptance', NEW.needs_acceptance, 'requested_at', NEW.requested_at,
            'pac_code', NEW.pac_code, 'sat_estado', NEW.sat_estado,
            'sat_estatus', NEW.sat_estatus, 'finished_at', NEW.finished_at);
    END IF;
    PERFORM audit_row('invoice_cancellation', r.invoice_id::text,
        audit_action('invoice_cancellation', TG_OP,
            CASE WHEN TG_OP = 'UPDATE' AND OLD.state IS DISTINCT FROM NEW.state
                 THEN NEW.state END),
        o, n, 'invoice:' || r.invoice_id || ' (' || r.source || ')');
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER invoice_cancellations_audit AFTER INSERT OR DELETE
    ON invoice_cancellations DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    EXECUTE FUNCTION audit_invoice_cancellations();
CREATE CONSTRAINT TRIGGER invoice_cancellations_audit_update AFTER UPDATE
    ON invoice_cancellations DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state
          OR OLD.motive IS DISTINCT FROM NEW.motive
          OR OLD.replacement_uuid IS DISTINCT FROM NEW.replacement_uuid
          OR OLD.source IS DISTINCT FROM NEW.source
          OR OLD.requested_at IS DISTINCT FROM NEW.requested_at
          OR OLD.pac_code IS DISTINCT FROM NEW.pac_code
          OR OLD.sat_estado IS DISTINCT FROM NEW.sat_estado
          OR OLD.sat_estatus IS DISTINCT FROM NEW.sat_estatus
          OR OLD.finished_at IS DISTINCT FROM NEW.finished_at)
    EXECUTE FUNCTION audit_invoice_cancellations();

-- global_invoices: the CFDI global's status, stamp and total.
CREATE FUNCTION audit_global_invoices() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    o jsonb;
    n jsonb;
    r global_invoices%ROWTYPE := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        o := jsonb_build_object('status', OLD.status, 'period_first', OLD.period_first,
            'periodicity', OLD.periodicity, 'series', OLD.series, 'folio', OLD.folio,
            'total', OLD.total, 'uuid', OLD.uuid);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        n := jsonb_build_object('status', NEW.status, 'period_first', NEW.period_first,
            'periodicity', NEW.periodicity, 'series', NEW.series, 'folio', NEW.folio,
            'total', NEW.total, 'uuid', NEW.uuid);
    END IF;
    PERFORM audit_row('global_invoice', r.id::text,
        audit_action('global_invoice', TG_OP,
            CASE WHEN TG_OP = 'UPDATE' AND OLD.status IS DISTINCT FROM NEW.status
                 THEN NEW.status END),
        o, n, 'job:cfdi-global');
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER global_invoices_audit AFTER INSERT OR DELETE ON global_invoices
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_global_invoices();
CREATE CONSTRAINT TRIGGER global_invoices_audit_update AFTER UPDATE ON global_invoices
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          OR OLD.total IS DISTINCT FROM NEW.total
          OR OLD.uuid IS DISTINCT FROM NEW.uuid
          OR OLD.series IS DISTINCT FROM NEW.series
          OR OLD.folio IS DISTINCT FROM NEW.folio)
    EXECUTE FUNCTION audit_global_invoices();

-- orders: what was ordered for how much, and the state its payment took it to.
CREATE FUNCTION audit_orders() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    o jsonb;
    n jsonb;
    r orders%ROWTYPE := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        o := jsonb_build_object('status', OLD.status, 'status_reason', OLD.status_reason,
            'product_ref', OLD.product_ref, 'price_id', OLD.price_id, 'amount', OLD.amount,
            'currency', OLD.currency, 'quantity', OLD.quantity, 'seats', OLD.seats,
            'provider', OLD.provider, 'payment_id', OLD.payment_id);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        n := jsonb_build_object('status', NEW.status, 'status_reason', NEW.status_reason,
            'product_ref', NEW.product_ref, 'price_id', NEW.price_id, 'amount', NEW.amount,
            'currency', NEW.currency, 'quantity', NEW.quantity, 'seats', NEW.seats,
            'provider', NEW.provider, 'payment_id', NEW.payment_id);
    END IF;
    PERFORM audit_row('order', r.id::text,
        audit_action('order', TG_OP,
            CASE WHEN TG_OP = 'UPDATE' AND OLD.status IS DISTINCT FROM NEW.status
                 THEN NEW.status END),
        o, n, coalesce('payment:' || r.payment_id, 'checkout'));
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER orders_audit AFTER INSERT OR DELETE ON orders
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_orders();
CREATE CONSTRAINT TRIGGER orders_audit_update AFTER UPDATE ON orders
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          OR OLD.status_reason IS DISTINCT FROM NEW.status_reason
          OR OLD.amount IS DISTINCT FROM NEW.amount
          OR OLD.currency IS DISTINCT FROM NEW.currency
          OR OLD.price_id IS DISTINCT FROM NEW.price_id
          OR OLD.quantity IS DISTINCT FROM NEW.quantity
          OR OLD.seats IS DISTINCT FROM NEW.seats
          OR OLD.payment_id IS DISTINCT FROM NEW.payment_id)
    EXECUTE FUNCTION audit_orders();

-- tenants: creation, plan (and what set it), token rotation (its time only), removal.
CREATE FUNCTION audit_tenants() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    o jsonb;
    n jsonb;
    r tenants%ROWTYPE := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    reached text;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        o := jsonb_build_object('plan', OLD.plan, 'plan_source', OLD.plan_source,
            'token_rotated_at', OLD.token_rotated_at);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        n := jsonb_build_object('plan', NEW.plan, 'plan_source', NEW.plan_source,
            'token_rotated_at', NEW.token_rotated_at);
    END IF;
    IF TG_OP = 'UPDATE' THEN
        reached := CASE
            WHEN OLD.plan IS DISTINCT FROM NEW.plan THEN 'plan_changed'
            WHEN OLD.token_sha256 IS DISTINCT FROM NEW.token_sha256 THEN 'token_rotated'
        END;
    END IF;
    PERFORM audit_row('tenant', r.id, audit_action('tenant', TG_OP, reached),
        o, n, r.plan_source);
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER tenants_audit AFTER INSERT OR DELETE ON tenants
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_tenants();
CREATE CONSTRAINT TRIGGER tenants_audit_update AFTER UPDATE ON tenants
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.plan IS DISTINCT FROM NEW.plan
          OR OLD.plan_source IS DISTINCT FROM NEW.plan_source
          OR OLD.token_sha256 IS DISTINCT FROM NEW.token_sha256
          OR OLD.token_rotated_at IS DISTINCT FROM NEW.token_rotated_at)
    EXECUTE FUNCTION audit_tenants();

-- provider_keys: added, replaced, re-encrypted, removed. The provider, the last four
-- characters and the Fernet key's fingerprint only; never the ciphertext.
CREATE FUNCTION audit_provider_keys() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    o jsonb;
    n jsonb;
    r provider_keys%ROWTYPE := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    reached text;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        o := jsonb_build_object('provider', OLD.provider, 'last4', OLD.last4,
            'key_version', OLD.key_version, 'updated_at', OLD.updated_at);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        n := jsonb_build_object('provider', NEW.provider, 'last4', NEW.last4,
            'key_version', NEW.key_version, 'updated_at', NEW.updated_at);
    END IF;
    IF TG_OP = 'INSERT' THEN
        reached := 'added';
    ELSIF TG_OP = 'DELETE' THEN
        reached := 'removed';
    ELSIF OLD.last4 IS NOT DISTINCT FROM NEW.last4
          AND OLD.key_version IS DISTINCT FROM NEW.key_version THEN
        reached := 'reencrypted';
    ELSE
        reached := 'replaced';
    END IF;
    PERFORM audit_row('provider_key', r.tenant_id || '/' || r.provider,
        'provider_key.' || reached, o, n, 'tenant:' || r.tenant_id);
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER provider_keys_audit AFTER INSERT OR DELETE ON provider_keys
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_provider_keys();
CREATE CONSTRAINT TRIGGER provider_keys_audit_update AFTER UPDATE ON provider_keys
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.ciphertext IS DISTINCT FROM NEW.ciphertext
          OR OLD.last4 IS DISTINCT FROM NEW.last4
          OR OLD.key_version IS DISTINCT FROM NEW.key_version)
    EXECUTE FUNCTION audit_provider_keys();

-- plans: the limits operators edit.
CREATE FUNCTION audit_plans() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    o jsonb;
    n jsonb;
    r plans%ROWTYPE := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        o := to_jsonb(OLD) - 'updated_at';
    END IF;
    IF TG_OP <> 'DELETE' THEN
        n := to_jsonb(NEW) - 'updated_at';
    END IF;
    PERFORM audit_row('plan', r.name, audit_action('plan', TG_OP, NULL), o, n, NULL);
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER plans_audit AFTER INSERT OR UPDATE OR DELETE ON plans
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_plans();

-- The catalog: products and their prices, created and archived.
CREATE FUNCTION audit_products() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    o jsonb;
    n jsonb;
    r products%ROWTYPE := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        o := to_jsonb(OLD) - 'created_at';
    END IF;
    IF TG_OP <> 'DELETE' THEN
        n := to_jsonb(NEW) - 'created_at';
    END IF;
    PERFORM audit_row('product', r.ref,
        audit_action('product', TG_OP,
            CASE WHEN TG_OP = 'UPDATE' AND OLD.archived_at IS NULL AND NEW.archived_at IS NOT NULL
                 THEN 'archived' END),
        o, n, NULL);
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER products_audit AFTER INSERT OR UPDATE OR DELETE ON products
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_products();

CREATE FUNCTION audit_prices() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    o jsonb;
    n jsonb;
    r prices%ROWTYPE := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        o := to_jsonb(OLD) - 'created_at';
    END IF;
    IF TG_OP <> 'DELETE' THEN
        n := to_jsonb(NEW) - 'created_at';
    END IF;
    PERFORM audit_row('price', r.id::text,
        audit_action('price', TG_OP,
            CASE WHEN TG_OP = 'UPDATE' AND OLD.archived_at IS NULL AND NEW.archived_at IS NOT NULL
                 THEN 'archived' END),
        o, n, 'product:' || r.product_ref);
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER prices_audit AFTER INSERT OR UPDATE OR DELETE ON prices
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_prices();

-- rates: a published exchange rate's decision (accepted, suspect, confirmed, rejected) and who
-- took it; a scrape seeing the same value again changes nothing recorded.
CREATE FUNCTION audit_rates() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM audit_row('rate', NEW.id::text, 'rate.' || NEW.status,
        jsonb_build_object('status', OLD.status, 'decided_by', OLD.decided_by,
            'decided_at', OLD.decided_at, 'reason', OLD.reason),
        jsonb_build_object('status', NEW.status, 'decided_by', NEW.decided_by,
            'decided_at', NEW.decided_at, 'reason', NEW.reason),
        NEW.decided_by);
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER rates_audit AFTER UPDATE ON rates
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.decided_by IS DISTINCT FROM NEW.decided_by)
    EXECUTE FUNCTION audit_rates();
