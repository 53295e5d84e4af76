-- Exchange rates: every value a scrape kept (published or not), each source's health, and the
-- scrapes themselves (so a scheduled scrape delivered twice runs once).

CREATE TABLE rates (
    id             bigserial PRIMARY KEY,
    source         text        NOT NULL CHECK (source IN ('bcv', 'binance')),
    pair           text        NOT NULL,
    value          numeric     NOT NULL,             -- VES per unit; Binance: the mid of buy and sell
    buy            numeric,                          -- Binance only: what a taker pays per USDT
    sell           numeric,                          -- Binance only: what a taker gets per USDT
    effective_date date        NOT NULL,
    fetched_at     timestamptz NOT NULL DEFAULT now(),
    last_seen_at   timestamptz NOT NULL DEFAULT now(), -- the last scrape that saw this value
    status         text        NOT NULL CHECK (status IN ('accepted', 'suspect', 'confirmed', 'rejected')),
    reason         text        NOT NULL,
    decided_by     text,                             -- who confirmed a suspect: 'scrape' or 'operator'
    decided_at     timestamptz
);

CREATE INDEX rates_series_idx ON rates (source, pair, id DESC);
CREATE INDEX rates_published_idx ON rates (source, pair, id DESC) WHERE status IN ('accepted', 'confirmed');

CREATE TABLE rate_sources (
    source               text PRIMARY KEY CHECK (source IN ('bcv', 'binance')),
    consecutive_failures integer     NOT NULL DEFAULT 0,
    stale                boolean     NOT NULL DEFAULT false,
    last_success_at      timestamptz,
    last_failure_at      timestamptz,
    last_outcome         text,
    last_error           text
);

INSERT INTO rate_sources (source) VALUES ('bcv'), ('binance');

CREATE TABLE rate_scrapes (
    id          bigserial PRIMARY KEY,
    source      text        NOT NULL REFERENCES rate_sources (source),
    run_key     text,                                -- the scheduled tick; NULL for on-demand scrapes
    outcome     text        NOT NULL,
    detail      text,
    finished_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, run_key)
);
