#!/bin/sh
# The test PostgreSQL server: a cluster in $PGDATA (a named volume in the
# stacks), made on the first start with trust authentication on the
# container's networks and the databases named in $POSTGRES_DB (space
# separated); then the server in the foreground as PID 1 (SIGINT: fast
# shutdown, SIGTERM: smart).
set -eu
bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    "$bin/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 >/dev/null
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    echo "host all all 0.0.0.0/0 trust" >>"$PGDATA/pg_hba.conf"
    for db in ${POSTGRES_DB:-}; do
        echo "CREATE DATABASE \"$db\";" | "$bin/postgres" --single -D "$PGDATA" postgres >/dev/null
    done
fi
exec "$bin/postgres" -D "$PGDATA"
