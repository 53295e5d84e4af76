#!/bin/sh
# Runs once, on the primary only, when the postgres image creates its data directory
# (/docker-entrypoint-initdb.d). Standbys are copies made with pg_basebackup: they inherit the
# role and the setting below and never run this.
#
# The replication role, and one synchronous standby among the three nodes: the first of the
# list that is connected and streaming confirms every commit; a node never waits for itself, so
# the same value holds on whichever node is primary. ALTER SYSTEM (postgresql.auto.conf) rather
# than a command-line option, so that an operator can change it on a running node.
set -eu
: "${POSTGRES_REPLICATION_PASSWORD:?set POSTGRES_REPLICATION_PASSWORD in deploy/compose/host.env}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v replication_password="$POSTGRES_REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'replication_password';
ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 (host1, host2, host3)';
SQL
