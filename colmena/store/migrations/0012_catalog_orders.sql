-- What can be bought and what was ordered. Products are license products (a package directory,
-- editions, seats) and tenant plans (the plan they grant). Prices are Decimal per currency;
-- providers get minor units at the checkout, with the currency's own exponent. An order is
-- stored before any provider is called; the webhook that settles it finds it by its id, which
-- is the only thing colmena puts in the provider's metadata that it later trusts.

CREATE TABLE products (
    ref         text PRIMARY KEY CHECK (ref ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    kind        text        NOT NULL CHECK (kind IN ('license', 'plan')),
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    package_dir text CHECK (package_dir ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$'),
    editions    text[]      NOT NULL DEFAULT '{}',
    max_seats   integer CHECK (max_seats BETWEEN 1 AND 100000),
    plan        text REFERENCES plans (name),
    archived_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'license') = (package_dir IS NOT NULL)),
    CHECK ((kind = 'plan') = (plan IS NOT NULL))
);

-- One live price per product, edition (NULL: any edition, and plans) and currency; archiving
-- keeps the row for the orders that used it.
CREATE TABLE prices (
    id             bigserial PRIMARY KEY,
    product_ref    text          NOT NULL REFERENCES products (ref),
    edition        text,
    currency       text          NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount         numeric(18,4) NOT NULL CHECK (amount > 0),
    billing_period text CHECK (billing_period IN ('month', 'year')),
    archived_at    timestamptz,
    created_at     timestamptz   NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX prices_live_idx
    ON prices (product_ref, coalesce(edition, ''), currency) WHERE archived_at IS NULL;

-- pending_provider: stored, the provider not (yet) reached: a retry of the same idempotency key
-- calls it again. open: the buyer was sent to the provider. paid: a settled payment matched it.
-- held: a payment arrived that does not match (amount, currency): for review, never fulfilled.
CREATE TABLE orders (
    id              uuid PRIMARY KEY,
    product_ref     text          NOT NULL REFERENCES products (ref),
    price_id        bigint        NOT NULL REFERENCES prices (id),
    edition         text,
    seats           integer       NOT NULL DEFAULT 1 CHECK (seats >= 1),
    quantity        integer       NOT NULL DEFAULT 1 CHECK (quantity BETWEEN 1 AND 100),
    currency        text          NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount          numeric(18,4) NOT NULL CHECK (amount > 0),
    buyer_email     text          NOT NULL,
    buyer_locale    text,
    provider        text          NOT NULL CHECK (provider IN ('stripe', 'mercadopago', 'bitso')),
    installments    integer CHECK (installments BETWEEN 1 AND 48),
    fiscal          jsonb,
    tenant_ref      text,
    status          text          NOT NULL DEFAULT 'pending_provider'
                    CHECK (status IN ('pending_provider', 'open', 'paid', 'held', 'failed', 'expired')),
    status_reason   text,
    provider_ref    text,
    redirect_url    text,
    payment_id      bigint REFERENCES payments (id),
    idempotency_key text UNIQUE,
    request_sha256  bytea CHECK (length(request_sha256) = 32),
    created_at      timestamptz   NOT NULL DEFAULT now(),
    updated_at      timestamptz   NOT NULL DEFAULT now()
);

CREATE INDEX orders_status_idx ON orders (status, created_at DESC);
CREATE UNIQUE INDEX orders_provider_ref_idx ON orders (provider, provider_ref)
    WHERE provider_ref IS NOT NULL;

ALTER TABLE payments DROP CONSTRAINT payments_provider_check;
ALTER TABLE payments ADD CONSTRAINT payments_provider_check
    CHECK (provider IN ('stripe', 'mercadopago', 'bitso'));
ALTER TABLE payments ADD COLUMN order_id uuid REFERENCES orders (id);
CREATE INDEX payments_order_idx ON payments (order_id) WHERE order_id IS NOT NULL;
