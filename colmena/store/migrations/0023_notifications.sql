-- Tenant notifications: where a tenant wants its bot's events (a Telegram chat, a webhook URL),
-- the events themselves, and one delivery per (event, endpoint) with its retries.
--
-- An endpoint is changed in place (a new URL or chat, a new secret) so deliveries still pending
-- go to where the tenant wants them now; DELETE marks it deleted, so the deliveries it had keep
-- their history. A webhook's signing secret is stored sealed to the supervisor side's X25519
-- key (the ingress, which makes it, cannot open it again), bound to the tenant and endpoint.
CREATE TABLE notification_endpoints (
    id            uuid        PRIMARY KEY,
    tenant_id     text        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind          text        NOT NULL CHECK (kind IN ('telegram', 'webhook')),
    target        text        NOT NULL,
    sealed_secret text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz,
    CHECK ((kind = 'webhook') = (sealed_secret IS NOT NULL))
);
CREATE UNIQUE INDEX notification_endpoints_live
    ON notification_endpoints (tenant_id, kind) WHERE deleted_at IS NULL;

-- What happened to a tenant's bot or plan, written in the transaction that recorded it.
CREATE TABLE tenant_events (
    id          uuid        PRIMARY KEY,
    tenant_id   text        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind        text        NOT NULL CHECK (kind IN (
                    'bot.started', 'bot.stopped', 'bot.crashed', 'bot.crashloop',
                    'bot.unhealthy', 'plan.changed')),
    data        jsonb       NOT NULL DEFAULT '{}',
    occurred_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenant_events_by_time ON tenant_events (occurred_at);  -- trimming

-- One delivery per (event, endpoint). pending -> in_flight (leased while a worker sends it) ->
-- delivered, or back to pending with the next attempt's time, or dead after the last attempt or
-- a permanent refusal. A dead delivery can be replayed (pending again, attempts from zero).
-- `dispatched_at` is when a message for it was last put on the queue, so the sweep only
-- re-sends what is due and was not sent since.
CREATE TABLE notification_deliveries (
    id              uuid        PRIMARY KEY,
    event_id        uuid        NOT NULL REFERENCES tenant_events (id) ON DELETE CASCADE,
    endpoint_id     uuid        NOT NULL REFERENCES notification_endpoints (id) ON DELETE CASCADE,
    tenant_id       text        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    channel         text        NOT NULL CHECK (channel IN ('telegram', 'webhook')),
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'in_flight', 'delivered', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    replays         integer     NOT NULL DEFAULT 0 CHECK (replays >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    dispatched_at   timestamptz,
    last_error      text,
    last_status     integer,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX notification_deliveries_page
    ON notification_deliveries (tenant_id, created_at DESC, id DESC);
CREATE INDEX notification_deliveries_due
    ON notification_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX notification_deliveries_in_flight
    ON notification_deliveries (tenant_id, lease_until) WHERE status = 'in_flight';
CREATE INDEX notification_deliveries_endpoint ON notification_deliveries (endpoint_id);
CREATE INDEX notification_deliveries_dead
    ON notification_deliveries (finished_at DESC) WHERE status = 'dead';
