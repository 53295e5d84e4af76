-- The CFDI global for público en general (colmena.domain.global_invoice): one per issuer and
-- period, and the payments it covers, each in at most one global invoice.

CREATE TABLE global_invoices (
    id              bigserial   PRIMARY KEY,
    issuer_rfc      text        NOT NULL,
    -- c_Periodicidad: 01 diario, 04 mensual. period_first/period_after bound the period in
    -- Mexico City's calendar, [first, after).
    periodicity     text        NOT NULL CHECK (periodicity IN ('01', '04')),
    period_first    date        NOT NULL,
    period_after    date        NOT NULL CHECK (period_after > period_first),
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN
                        ('pending', 'stamping', 'stamped', 'failed')),
    series          text        NOT NULL,
    folio           bigint      NOT NULL,
    total           numeric(18, 2),
    -- As for invoices: fixed on the first attempt, so every retry sends the PAC the same bytes
    -- under the same reference and a lost answer comes back as the stamp already issued.
    pac_reference   uuid        NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    signed_xml      bytea,
    signed_at       timestamptz,
    stamped_xml     bytea,
    uuid            text        UNIQUE,
    fecha_timbrado  timestamptz,
    recovered       boolean     NOT NULL DEFAULT false,
    attempts        integer     NOT NULL DEFAULT 0,
    failure_code    text,
    failure_message text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- The "exactly once" of a period: a second run of the job finds this row.
    UNIQUE (issuer_rfc, periodicity, period_first),
    UNIQUE (issuer_rfc, series, folio)
);

CREATE INDEX global_invoices_open_idx ON global_invoices (id) WHERE status IN ('pending', 'stamping');

CREATE TABLE global_invoice_payments (
    global_invoice_id bigint NOT NULL REFERENCES global_invoices (id),
    -- UNIQUE: a sale is on one global invoice at most. position = its Concepto's order.
    payment_id        bigint NOT NULL UNIQUE REFERENCES payments (id),
    position          integer NOT NULL,
    PRIMARY KEY (global_invoice_id, position)
);
