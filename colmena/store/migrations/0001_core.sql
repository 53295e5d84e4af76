-- The no-loss core: what arrived (inbox) and what must be sent (outbox).

CREATE TABLE inbox (
    id           bigserial PRIMARY KEY,
    provider     text        NOT NULL,
    event_key    text        NOT NULL,
    kind         text        NOT NULL,
    payload      jsonb       NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    outcome      text,
    UNIQUE (provider, event_key)
);

CREATE TABLE outbox (
    id               bigserial PRIMARY KEY,
    message_id       uuid        NOT NULL UNIQUE,
    queue            text        NOT NULL,
    actor            text        NOT NULL,
    args             jsonb       NOT NULL DEFAULT '[]',
    kwargs           jsonb       NOT NULL DEFAULT '{}',
    dedupe_key       text UNIQUE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    published_at     timestamptz,
    consumed_at      timestamptz,
    publish_attempts integer     NOT NULL DEFAULT 0,
    last_error       text
);

CREATE INDEX outbox_pending_idx ON outbox (created_at) WHERE published_at IS NULL;

-- Why a message went to the dead letters (RabbitMQ keeps only its body).
CREATE TABLE dead_letter_reasons (
    message_id  text        PRIMARY KEY,
    actor       text        NOT NULL,
    error       text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
