-- Self-service tenant accounts: an email and an argon2id password hash, verified by an emailed
-- link, which creates the account's tenant on the Free plan. Every token (emailed links, access
-- and refresh tokens) is kept only as its SHA-256: a database dump opens nothing.

CREATE TABLE accounts (
    id            uuid PRIMARY KEY,
    email         text        NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    password_hash text        NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    verified_at   timestamptz,
    -- Set at verification; NULL again if an operator removes the tenant (its tokens then fail).
    tenant_id     text UNIQUE REFERENCES tenants (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One account per address whatever its case: Ana@Example.com and ana@example.com are one.
CREATE UNIQUE INDEX accounts_email_idx ON accounts (lower(email));

-- Emailed one-time links: 'verify' (activates the account) and 'reset' (sets a new password).
CREATE TABLE account_links (
    token_sha256 bytea PRIMARY KEY CHECK (length(token_sha256) = 32),
    account_id   uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    purpose      text        NOT NULL CHECK (purpose IN ('verify', 'reset')),
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX account_links_account_idx ON account_links (account_id, purpose);

-- One login: the family of every access and refresh token its refreshes issued. Revoking it
-- (logout, a reused refresh token, a password reset) ends all of them at once.
CREATE TABLE account_sessions (
    id             uuid PRIMARY KEY,
    account_id     uuid        NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    revoked_at     timestamptz,
    revoked_reason text CHECK (revoked_reason IN ('logout', 'refresh_reused', 'password_reset')),
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX account_sessions_account_idx ON account_sessions (account_id);

-- A refresh token is used once (used_at): the refresh that spends it issues the next pair; a
-- second use is a stolen copy and revokes the session.
CREATE TABLE session_tokens (
    token_sha256 bytea PRIMARY KEY CHECK (length(token_sha256) = 32),
    session_id   uuid        NOT NULL REFERENCES account_sessions (id) ON DELETE CASCADE,
    kind         text        NOT NULL CHECK (kind IN ('access', 'refresh')),
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX session_tokens_session_idx ON session_tokens (session_id);
CREATE INDEX session_tokens_expiry_idx ON session_tokens (expires_at);
