-- Tenants paying for a plan through Stripe subscriptions: one Stripe customer per tenant,
-- created once (the checkout and the customer portal both name it), and the capital a plan lets
-- a bot trade, which tenants' configs carry as `capital` and colmena now enforces.

CREATE TABLE billing_customers (
    tenant_id   text PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    customer_id text        NOT NULL UNIQUE CHECK (customer_id ~ '^cus_[A-Za-z0-9]{1,250}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- In the plan's own terms (the bot's quote currency); operators edit it like the other limits.
ALTER TABLE plans ADD COLUMN max_capital numeric(20,8) NOT NULL DEFAULT 1000 CHECK (max_capital > 0);
UPDATE plans SET max_capital = 100000 WHERE name = 'pro';
UPDATE plans SET max_capital = 10000000 WHERE name = 'enterprise';
ALTER TABLE plans ALTER COLUMN max_capital DROP DEFAULT;
