-- What the supervisor remembers about a bot between passes beyond its restarts: since when its
-- heartbeat is stale (it is restarted after COLMENA_BOT_UNHEALTHY_RESTART_SECONDS), and the last
-- start the runtime refused, with the engine's message (retried under the restart policy).
ALTER TABLE bots
    ADD COLUMN unhealthy_since timestamptz,
    ADD COLUMN start_failed_at timestamptz,
    ADD COLUMN start_error     text;
