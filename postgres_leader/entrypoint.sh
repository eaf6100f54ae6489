#!/bin/sh
# Entrypoint of the leader. On the first start (an empty $PGDATA) quest sets
# the node up: initdb, the shared settings, the roles and the database, as
# `quest cluster up` does locally; passwords from POSTGRES_PASSWORD and
# QUEST_*_PASSWORD. Then the server runs in the foreground.
set -e
quest cluster init-node --role leader
exec runuser -u postgres -- postgres -D "$PGDATA"
