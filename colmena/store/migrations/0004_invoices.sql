-- CFDI invoices for approved payments (one per payment) and the folio counter of each issuer
-- and series.

-- A counter row rather than a SEQUENCE: it is bumped in the transaction that inserts the
-- invoice, so a rolled-back insert gives its folio back and folios have no gaps.
CREATE TABLE invoice_folios (
    issuer_rfc  text   NOT NULL,
    series      text   NOT NULL,
    last_folio  bigint NOT NULL CHECK (last_folio >= 0),
    PRIMARY KEY (issuer_rfc, series)
);

CREATE TABLE invoices (
    id              bigserial   PRIMARY KEY,
    payment_id      bigint      NOT NULL UNIQUE REFERENCES payments (id),
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN
                        ('pending', 'stamping', 'stamped', 'failed', 'cancellation_requested')),
    issuer_rfc      text        NOT NULL,
    series          text        NOT NULL,
    folio           bigint      NOT NULL,
    receiver_rfc    text,
    receiver_email  text,
    currency        text,
    total           numeric(18, 2),
    -- The sealed XML exactly as sent to the PAC: every retry sends these bytes again, so the
    -- PAC's duplicate guard recognises it. Cleared only by `colmena invoices retry` after a
    -- definite refusal (nothing was stamped).
    -- SW's customid (duplicate guard): random, so two deployments sharing a PAC account
    -- never collide the way invoice ids would; stable across retries.
    pac_reference   uuid        NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    signed_xml      bytea,
    signed_at       timestamptz,
    stamped_xml     bytea,
    uuid            text        UNIQUE,
    fecha_timbrado  timestamptz,
    recovered       boolean     NOT NULL DEFAULT false,
    xml_path        text,
    pdf_path        text,
    attempts        integer     NOT NULL DEFAULT 0,
    -- Why the last attempt failed. source: pac (the PAC's code and message), csd, data,
    -- transient (timeouts, 5xx: being retried).
    failure_source  text CHECK (failure_source IN ('pac', 'csd', 'data', 'transient')),
    failure_code    text,
    failure_message text,
    emailed_at      timestamptz,
    email_message_id text,
    cancel_requested_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (issuer_rfc, series, folio)
);

CREATE INDEX invoices_status_idx ON invoices (status, id DESC);
