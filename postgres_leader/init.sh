#!/bin/bash
# Entrypoint of the leader. On the first start (an empty $PGDATA): initdb,
# the settings, the roles and the slots the local launcher creates; then the
# server in the foreground.
set -euo pipefail
: "${QUEST_APP_PASSWORD:?}" "${QUEST_REPL_PASSWORD:?}" "${QUEST_LEVER_PASSWORD:?}" "${POSTGRES_PASSWORD:?}"

mkdir -p "$PGDATA" && chown postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"
as_pg() { runuser -u postgres -- "$@"; }

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pw=$(mktemp) && chown postgres "$pw" && printf '%s\n' "$POSTGRES_PASSWORD" > "$pw"
  # Local (socket) connections inside the container trust, as the official
  # image does, so that healthchecks run as root; the network asks a password.
  as_pg initdb -D "$PGDATA" -U postgres --pwfile "$pw" --auth-host=scram-sha-256 --auth-local=trust \
    -E UTF8 --locale=C >/dev/null
  rm -f "$pw"
  cat /etc/postgresql/quest.conf >> "$PGDATA/postgresql.conf"
  {
    echo "host all all all scram-sha-256"
    # Followers connect as the replication role from the compose network.
    echo "host replication quest_replicator all scram-sha-256"
  } >> "$PGDATA/pg_hba.conf"

  as_pg pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start >/dev/null
  as_pg psql -v ON_ERROR_STOP=1 -q --username postgres --dbname postgres \
    -v app_pw="$QUEST_APP_PASSWORD" -v repl_pw="$QUEST_REPL_PASSWORD" -v lever_pw="$QUEST_LEVER_PASSWORD" <<'SQL'
CREATE ROLE quest LOGIN PASSWORD :'app_pw';
GRANT pg_monitor TO quest;
CREATE ROLE quest_replicator LOGIN REPLICATION PASSWORD :'repl_pw';
CREATE ROLE quest_lever LOGIN PASSWORD :'lever_pw';
GRANT pg_monitor TO quest_lever;
GRANT ALTER SYSTEM ON PARAMETER recovery_min_apply_delay TO quest_lever;
CREATE DATABASE quest OWNER quest;
-- One physical slot per follower, as pg_basebackup -C -S makes locally.
-- Reserved now (true): an unreserved slot holds no WAL until a follower
-- streams from it, and the followers clone at once, each with a fast
-- checkpoint that can recycle the segment the other's backup still needs.
SELECT pg_create_physical_replication_slot('replica1', true);
SELECT pg_create_physical_replication_slot('replica2', true);
SQL
  # Function privileges live in each database: grant them where the levers connect.
  as_pg psql -v ON_ERROR_STOP=1 -q --username postgres --dbname quest <<'SQL'
GRANT EXECUTE ON FUNCTION pg_wal_replay_pause(), pg_wal_replay_resume(), pg_reload_conf() TO quest_lever;
SQL
  as_pg pg_ctl -D "$PGDATA" -w -m fast stop >/dev/null
fi

exec runuser -u postgres -- postgres -D "$PGDATA"
