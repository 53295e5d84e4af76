-- Bots' log lines, copied here by the supervisor side so that the ingress reads logs from the
-- database and never from a Docker engine or a bot's log file.

-- seq numbers one tenant's lines in the order they were shipped (across its bots' lives); the
-- oldest are deleted beyond COLMENA_BOT_LOG_MAX_LINES and after the plan's log_retention_days.
CREATE TABLE bot_logs (
    tenant_id text        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    seq       bigint      NOT NULL CHECK (seq >= 1),
    logged_at timestamptz NOT NULL,
    line      text        NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

CREATE INDEX bot_logs_retention_idx ON bot_logs (tenant_id, logged_at);

-- Where shipping stopped in the tenant's current bot: a new bot_id starts from its first line.
-- position and skip mean what the runtime says (Docker: the last timestamp shipped, in ns, and
-- how many lines carrying exactly that timestamp were shipped; processes: a byte offset).
-- Updated in the transaction that inserts the lines, so a line is never shipped twice.
CREATE TABLE bot_log_cursors (
    tenant_id  text PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    last_seq   bigint      NOT NULL DEFAULT 0,
    bot_id     text,
    position   bigint      NOT NULL DEFAULT 0,
    skip       integer     NOT NULL DEFAULT 0,
    shipped_at timestamptz
);
