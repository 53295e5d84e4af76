-- The web console's operators and its browser sessions.
--
-- console_admins: operator accounts (`colmena admins add`), each an argon2id hash; disabling one
-- keeps the row (audit rows name it) and ends its sessions.
-- console_sessions: one row per signed-in browser. The id is the SHA-256 of the cookie's value,
-- so a database dump opens no session. An admin session names its admin, or none when it was
-- opened with COLMENA_BOT_ADMIN_TOKEN (allowed only while no admin account exists); a tenant
-- session names its tenant and, for an account's login, the account (its removal ends the
-- session), or for a tenant token's login the token's digest (a rotation ends the session).
-- Idle expiry is decided from last_seen_at, absolute expiry is expires_at.

CREATE TABLE console_admins (
    name          text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    password_hash text        NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz
);

CREATE TABLE console_sessions (
    id                bytea PRIMARY KEY CHECK (length(id) = 32),
    kind              text        NOT NULL CHECK (kind IN ('admin', 'tenant')),
    admin_name        text REFERENCES console_admins (name) ON DELETE CASCADE,
    tenant_id         text REFERENCES tenants (id) ON DELETE CASCADE,
    account_id        uuid REFERENCES accounts (id) ON DELETE CASCADE,
    credential_sha256 bytea CHECK (length(credential_sha256) = 32),
    csrf_token        text        NOT NULL CHECK (length(csrf_token) >= 32),
    created_at        timestamptz NOT NULL,
    last_seen_at      timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    CHECK (
        (kind = 'admin' AND tenant_id IS NULL AND account_id IS NULL)
        OR (kind = 'tenant' AND tenant_id IS NOT NULL AND admin_name IS NULL
            AND (account_id IS NOT NULL OR credential_sha256 IS NOT NULL))
    )
);

CREATE INDEX console_sessions_admin_idx ON console_sessions (admin_name) WHERE admin_name IS NOT NULL;
CREATE INDEX console_sessions_tenant_idx ON console_sessions (tenant_id) WHERE tenant_id IS NOT NULL;
CREATE INDEX console_sessions_expiry_idx ON console_sessions (expires_at);
CREATE INDEX console_sessions_seen_idx ON console_sessions (last_seen_at);

-- The operator console's searches by customer email (payments newest first, by id) and the
-- overview's counts of the day: measured on 100,000 payments, each from a scan of every row
-- (about 200 ms) to an index lookup (about 2 ms).
CREATE INDEX payments_email_idx ON payments (lower(customer_email), id);
CREATE INDEX licenses_email_idx ON licenses (lower(customer_email));
CREATE INDEX licenses_issued_idx ON licenses (issued_at);
CREATE INDEX invoices_created_idx ON invoices (created_at);
CREATE INDEX invoices_stamped_idx ON invoices (fecha_timbrado);
-- The licenses list and a payment's timeline show each license's last email: without it, every
-- row of a page scans license_emails (about 1 s a page with 80,000 licenses).
CREATE INDEX license_emails_license_idx ON license_emails (license_id, id);
