#!/bin/sh
# A streaming replica that bootstraps itself: on an empty data directory it
# copies the leader with pg_basebackup (-R writes standby.signal and the
# connection to follow), then runs as a hot standby.
set -eu
: "${PRIMARY_HOST:?}" "${REPLICATION_USER:?}" "${REPLICATION_PASSWORD:?}" "${PGDATA:?}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "replica: waiting for the leader at $PRIMARY_HOST"
    until pg_isready -q -h "$PRIMARY_HOST" -p 5432; do sleep 1; done
    echo "replica: copying the leader"
    PGPASSWORD="$REPLICATION_PASSWORD" pg_basebackup -h "$PRIMARY_HOST" -p 5432 -U "$REPLICATION_USER" \
        -D "$PGDATA" -R -X stream -c fast
    chmod 0700 "$PGDATA"
fi
exec postgres -c hot_standby=on
