#!/bin/sh
# Entrypoint of a follower. REPLICA_NAME names it (replica1, replica2): its
# slot on the leader and its application_name in pg_stat_replication. On the
# first start (an empty $PGDATA) quest waits for the leader and clones it
# with pg_basebackup, as `quest cluster up` does locally. Then the server
# runs in the foreground, a hot standby.
set -e
: "${REPLICA_NAME:?set REPLICA_NAME}"
quest cluster init-node --role follower --name "$REPLICA_NAME" --leader "${LEADER_HOST:-leader}:5432"
exec runuser -u postgres -- postgres -D "$PGDATA"
