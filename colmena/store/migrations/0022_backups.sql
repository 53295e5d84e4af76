-- Backups colmena took (`colmena backup`, the daily `backup` job) and the daily health reports
-- it sent. A backup row is written when the dump starts and finished with its outcome, so a
-- failed or interrupted one is visible too; only 'ok' rows count as a backup to restore.

CREATE TABLE backups (
    id               bigserial   PRIMARY KEY,
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    status           text        NOT NULL DEFAULT 'running'
                         CHECK (status IN ('running', 'ok', 'failed', 'pruned')),
    -- The file in the backup directory (a name, not a path: the directory is this host's).
    file_name        text        NOT NULL UNIQUE,
    location         text        NOT NULL,
    size_bytes       bigint      CHECK (size_bytes >= 0),
    sha256           text,
    key_fingerprint  text,
    pg_dump_version  text,
    server_version   text,
    -- The object key of the copy in the S3-compatible bucket, once uploaded.
    s3_key           text,
    error            text,
    pruned_at        timestamptz,
    CHECK (status <> 'ok' OR (finished_at IS NOT NULL AND size_bytes IS NOT NULL))
);

CREATE INDEX backups_good_idx ON backups (finished_at DESC) WHERE status = 'ok';

-- One row per local day the health report covers: the report goes out once per day however
-- many schedulers tick. sent_at stays NULL while sending has not succeeded yet.
CREATE TABLE health_reports (
    day          date        PRIMARY KEY,
    recipient    text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz,
    message_id   text
);
