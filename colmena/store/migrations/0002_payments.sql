-- One payments table for every provider, and the history of every status it was told.

CREATE TABLE payments (
    id                  bigserial PRIMARY KEY,
    provider            text        NOT NULL CHECK (provider IN ('stripe', 'mercadopago')),
    provider_payment_id text        NOT NULL,
    amount_minor        bigint      NOT NULL CHECK (amount_minor >= 0),
    currency            text        NOT NULL,
    customer_email      text,
    customer_locale     text,
    tenant_ref          text,
    product_ref         text,
    product_kind        text CHECK (product_kind IN ('license', 'plan')),
    metadata            jsonb       NOT NULL DEFAULT '{}',
    status              text        NOT NULL,
    status_at           timestamptz NOT NULL,
    approved_at         timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, provider_payment_id)
);

CREATE INDEX payments_status_idx ON payments (status);
CREATE INDEX payments_created_idx ON payments (created_at DESC);

CREATE TABLE payment_events (
    id          bigserial PRIMARY KEY,
    payment_id  bigint      NOT NULL REFERENCES payments (id),
    inbox_id    bigint REFERENCES inbox (id),
    source      text        NOT NULL,
    status      text        NOT NULL,
    provider_at timestamptz NOT NULL,
    applied     boolean     NOT NULL,
    reason      text,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX payment_events_payment_idx ON payment_events (payment_id, id);
