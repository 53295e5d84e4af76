-- Cancellations of stamped CFDI at the SAT (issue 17): one row per invoice, moved by the PAC's
-- answer to the request and then by the SAT's status service (colmena.domain.cancellation says
-- which answer leads where). A rejected or refused cancellation may be asked for again: the
-- row is reused, its history kept in the log lines and in `polls`.
CREATE TABLE invoice_cancellations (
    invoice_id        bigint      PRIMARY KEY REFERENCES invoices (id),
    state             text        NOT NULL DEFAULT 'requested' CHECK (state IN
                          ('requested', 'in_process', 'awaiting_acceptance', 'cancelled',
                           'expired', 'rejected', 'refused')),
    motive            text        NOT NULL CHECK (motive IN ('01', '02', '03')),
    -- FolioSustitucion: only with motive 01, and always with it.
    replacement_uuid  text        CHECK ((motive = '01') = (replacement_uuid IS NOT NULL)),
    -- What RMF rule 2.7.1.35 says of this invoice, judged when the request was made.
    needs_acceptance  boolean     NOT NULL,
    source            text        NOT NULL CHECK (source IN ('refund', 'operator')),
    requested_at      timestamptz NOT NULL DEFAULT now(),
    -- The PAC's answer to the request: EstatusUUID (201, 202) or its refusal code and text,
    -- and the SAT's acknowledgment (acuse) it returned.
    filed_at          timestamptz,
    pac_code          text,
    pac_message       text,
    acuse             bytea,
    request_attempts  integer     NOT NULL DEFAULT 0,
    -- The SAT status service's last answer, field for field, and when to ask next.
    sat_codigo        text,
    sat_estado        text,
    sat_es_cancelable text,
    sat_estatus       text,
    polls             integer     NOT NULL DEFAULT 0,
    next_poll_at      timestamptz,
    last_error        text,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- The polling job's worklist: open cancellations, soonest first.
CREATE INDEX invoice_cancellations_due_idx ON invoice_cancellations (next_poll_at)
    WHERE state IN ('requested', 'in_process', 'awaiting_acceptance');
