-- Provider keys on their way from the ingress to the supervisor: sealed to the supervisor's
-- X25519 public key (the ingress cannot open them), one per tenant and provider (a newer PUT
-- replaces the older), deleted once a bots worker has re-encrypted the key into provider_keys.
CREATE TABLE pending_provider_keys (
    tenant_id  text        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    provider   text        NOT NULL CHECK (provider ~ '^[a-z][a-z0-9_]{1,31}$'),
    sealed     text        NOT NULL,
    last4      text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, provider)
);
