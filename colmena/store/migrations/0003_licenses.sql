-- Licenses issued for approved payments, the emails that deliver them, their one-time
-- download links and every download attempt.

CREATE TABLE licenses (
    id              uuid        PRIMARY KEY,
    payment_id      bigint      NOT NULL UNIQUE REFERENCES payments (id),
    product_ref     text        NOT NULL,
    edition         text        NOT NULL,
    customer_email  text        NOT NULL,
    customer_locale text,
    seats           integer     NOT NULL CHECK (seats >= 1),
    issued_at       timestamptz NOT NULL,
    expires_at      timestamptz,
    license_key     text        NOT NULL,
    -- Relative to the package storage directory; NULL until built or after cleanup.
    package_path    text,
    package_sha256  text,
    package_size    bigint,
    package_built_at timestamptz,
    revoked_at      timestamptz,
    revoked_reason  text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- One row per email we owe the customer: the purchase email (one per license) and every
-- `colmena license resend`. sent_at is set only after the SMTP server accepted the message.
CREATE TABLE license_emails (
    id            bigserial   PRIMARY KEY,
    license_id    uuid        NOT NULL REFERENCES licenses (id) ON DELETE CASCADE,
    reason        text        NOT NULL CHECK (reason IN ('purchase', 'resend')),
    requested_at  timestamptz NOT NULL DEFAULT now(),
    attempts      integer     NOT NULL DEFAULT 0,
    last_error    text,
    sent_at       timestamptz,
    smtp_message_id text,
    superseded_at timestamptz
);

CREATE UNIQUE INDEX license_emails_one_purchase ON license_emails (license_id) WHERE reason = 'purchase';
CREATE INDEX license_emails_pending_idx ON license_emails (license_id) WHERE sent_at IS NULL;

-- Only the SHA-256 of a token is kept: the token itself exists in the email and nowhere else.
CREATE TABLE download_links (
    id             bigserial   PRIMARY KEY,
    license_id     uuid        NOT NULL REFERENCES licenses (id) ON DELETE CASCADE,
    email_id       bigint      REFERENCES license_emails (id) ON DELETE SET NULL,
    token_sha256   bytea       NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    expires_at     timestamptz NOT NULL,
    max_downloads  integer     NOT NULL CHECK (max_downloads >= 1),
    used           integer     NOT NULL DEFAULT 0 CHECK (used >= 0 AND used <= max_downloads),
    created_at     timestamptz NOT NULL DEFAULT now(),
    emailed_at     timestamptz,
    last_used_at   timestamptz,
    invalidated_at timestamptz
);

CREATE INDEX download_links_license_idx ON download_links (license_id);
CREATE INDEX download_links_expires_idx ON download_links (expires_at);

CREATE TABLE download_log (
    id          bigserial   PRIMARY KEY,
    link_id     bigint      REFERENCES download_links (id) ON DELETE SET NULL,
    license_id  uuid        REFERENCES licenses (id) ON DELETE SET NULL,
    outcome     text        NOT NULL,
    client_ip   text,
    user_agent  text,
    at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX download_log_license_idx ON download_log (license_id, at);
