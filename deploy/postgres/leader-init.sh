#!/bin/sh
# Runs once, when the leader's data directory is first created (the official
# image runs /docker-entrypoint-initdb.d/*): a role for the replica to
# stream with, and a pg_hba rule letting it connect for replication.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE ROLE ${REPLICATION_USER} WITH REPLICATION LOGIN PASSWORD '${REPLICATION_PASSWORD}';
SQL
echo "host replication ${REPLICATION_USER} all scram-sha-256" >> "$PGDATA/pg_hba.conf"
