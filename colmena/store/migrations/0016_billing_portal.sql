-- The customer portal configuration colmena opens tenants' portal sessions with (no plan switches
-- in the portal: colmena switches plans itself). Created on Stripe once per feature set, then
-- reused; `features` names the set (colmena.gateways.stripe_billing.PORTAL_FEATURES_VERSION), so a
-- changed set makes a new configuration rather than reusing one that offers other features.
CREATE TABLE billing_portal_configurations (
    features         text PRIMARY KEY,
    configuration_id text        NOT NULL CHECK (configuration_id ~ '^bpc_[A-Za-z0-9]{1,250}$'),
    created_at       timestamptz NOT NULL DEFAULT now()
);
