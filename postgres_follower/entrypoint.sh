#!/bin/bash
# Entrypoint of a follower: REPLICA_NAME names it (replica1, replica2) as
# application_name in the leader's pg_stat_replication and as its slot.
set -euo pipefail
: "${REPLICA_NAME:?set REPLICA_NAME}" "${LEADER_HOST:=leader}" "${QUEST_REPL_PASSWORD:?set QUEST_REPL_PASSWORD}"

mkdir -p "$PGDATA" && chown postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"

until pg_isready -h "$LEADER_HOST" -p 5432 -q; do
  echo "waiting for the leader at $LEADER_HOST:5432"
  sleep 1
done

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "cloning the leader into $PGDATA as $REPLICA_NAME"
  export PGPASSWORD="$QUEST_REPL_PASSWORD"
  runuser -u postgres -- pg_basebackup -D "$PGDATA" -R -X stream -S "$REPLICA_NAME" -c fast \
    -d "host=$LEADER_HOST port=5432 user=quest_replicator application_name=$REPLICA_NAME"
fi

exec runuser -u postgres -- postgres -D "$PGDATA"
