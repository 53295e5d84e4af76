-- Tenants of the trading-bot service, their plans, encrypted provider keys, the desired state
-- of each tenant's bot with its restart bookkeeping, the commands tenants send, and every plan
-- change the payments side asked for (applied or not, and why).

-- Operators edit limits here (UPDATE plans ...); the reconciler applies them on its next pass.
CREATE TABLE plans (
    name               text PRIMARY KEY,
    max_symbols        integer     NOT NULL CHECK (max_symbols >= 1),
    live_allowed       boolean     NOT NULL,
    memory_mb          integer     NOT NULL CHECK (memory_mb >= 16),
    cpu_millis         integer     NOT NULL CHECK (cpu_millis >= 10),
    log_retention_days integer     NOT NULL CHECK (log_retention_days >= 1),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

INSERT INTO plans (name, max_symbols, live_allowed, memory_mb, cpu_millis, log_retention_days) VALUES
    ('free', 1, false, 64, 250, 1),
    ('pro', 5, true, 128, 500, 7),
    ('enterprise', 50, true, 512, 2000, 30);

-- Only the SHA-256 of a tenant's API token is kept; the token is printed once, at creation or rotation.
CREATE TABLE tenants (
    id               text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    email            text        NOT NULL,
    plan             text        NOT NULL REFERENCES plans (name),
    plan_source      text,                  -- what set the plan: 'operator', 'subscription:...', 'payment:...'
    plan_provider_at timestamptz,           -- provider time of the plan change applied last
    token_sha256     bytea       NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    token_rotated_at timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Provider keys as MultiFernet tokens; key_version names the Fernet key that encrypted the row
-- (a fingerprint, never the key), so `colmena keys rotate` can show what is left to re-encrypt.
CREATE TABLE provider_keys (
    id          bigserial PRIMARY KEY,
    tenant_id   text        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    provider    text        NOT NULL CHECK (provider ~ '^[a-z][a-z0-9_]{1,31}$'),
    ciphertext  text        NOT NULL,
    last4       text        NOT NULL,
    key_version text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, provider)
);

-- Desired state (what the tenant asked for) and the supervisor's memory of the bot: restart
-- times within the policy window, the crash streak, crashloop, and what the last pass observed.
CREATE TABLE bots (
    tenant_id        text PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    desired          text        NOT NULL DEFAULT 'stopped' CHECK (desired IN ('running', 'stopped')),
    config           jsonb       NOT NULL,
    config_version   integer     NOT NULL DEFAULT 1 CHECK (config_version >= 1),
    restarts         timestamptz[] NOT NULL DEFAULT '{}',
    streak           integer     NOT NULL DEFAULT 0,
    restarts_total   integer     NOT NULL DEFAULT 0,
    crashloop        boolean     NOT NULL DEFAULT false,
    crashloop_reason text,
    next_restart_at  timestamptz,
    observed         text        NOT NULL DEFAULT 'stopped',
    observed_at      timestamptz,
    healthy          boolean,               -- NULL: not judged yet (just started, or not running)
    last_exit_code   integer,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX bots_due_restart_idx ON bots (next_restart_at) WHERE next_restart_at IS NOT NULL;

CREATE TABLE bot_commands (
    id           uuid PRIMARY KEY,
    tenant_id    text        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind         text        NOT NULL CHECK (kind IN ('start', 'stop', 'restart', 'configure')),
    requested_by text        NOT NULL CHECK (requested_by IN ('tenant', 'admin')),
    status       text        NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'done', 'failed')),
    reason       text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);

CREATE INDEX bot_commands_tenant_idx ON bot_commands (tenant_id, created_at DESC);

-- Every apply_plan message: applied, stale, or for a tenant colmena does not know yet (applied
-- when `colmena tenants create --id` creates it).
CREATE TABLE plan_changes (
    id          bigserial PRIMARY KEY,
    tenant_ref  text        NOT NULL,
    plan        text        NOT NULL,
    active      boolean     NOT NULL,
    source      text        NOT NULL,
    provider_at timestamptz NOT NULL,
    outcome     text        NOT NULL CHECK (outcome IN ('applied', 'stale', 'ignored', 'unknown_tenant')),
    reason      text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX plan_changes_tenant_idx ON plan_changes (tenant_ref, provider_at DESC);
