#!/bin/bash
# Runs once, on the leader's first start (docker-entrypoint-initdb.d): the
# settings, the roles and the slots the local launcher creates.
set -euo pipefail

cat /etc/postgresql/quest.conf >> "$PGDATA/postgresql.conf"
# Followers connect as the replication role from the compose network.
echo "host replication quest_replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v app_pw="$QUEST_APP_PASSWORD" -v repl_pw="$QUEST_REPL_PASSWORD" -v lever_pw="$QUEST_LEVER_PASSWORD" <<'SQL'
CREATE ROLE quest LOGIN PASSWORD :'app_pw';
GRANT pg_monitor TO quest;
CREATE ROLE quest_replicator LOGIN REPLICATION PASSWORD :'repl_pw';
CREATE ROLE quest_lever LOGIN PASSWORD :'lever_pw';
GRANT pg_monitor TO quest_lever;
GRANT ALTER SYSTEM ON PARAMETER recovery_min_apply_delay TO quest_lever;
CREATE DATABASE quest OWNER quest;
-- One physical slot per follower, as pg_basebackup -C -S makes locally.
SELECT pg_create_physical_replication_slot('replica1');
SELECT pg_create_physical_replication_slot('replica2');
SQL

# Function privileges live in each database: grant them where the levers connect.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname quest <<'SQL'
GRANT EXECUTE ON FUNCTION pg_wal_replay_pause(), pg_wal_replay_resume(), pg_reload_conf() TO quest_lever;
SQL
