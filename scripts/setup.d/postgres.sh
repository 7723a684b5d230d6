#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests/backup.rs: installs the Debian
# `postgresql` package if pg_ctl is missing, starts a fresh cluster in a temp
# dir on 127.0.0.1 (free port, trust auth, socket in the temp dir), creates the
# database `stackpin_test` with a table `items` of three rows, and exports
#   STACKPIN_TEST_PG_URL=postgresql://postgres@127.0.0.1:PORT
#   STACKPIN_TEST_PG_BIN=/usr/lib/postgresql/NN/bin
#   STACKPIN_TEST_PG_DB=stackpin_test
#
# Sourced by scripts/test.sh (which provides `section` and `stackpin_on_exit`):
# the cluster is stopped and removed when the test run ends.
# Standalone, for local runs:
#   bash scripts/setup.d/postgres.sh        start (or reuse) and write
#                                           target/test-postgres.env
#   bash scripts/setup.d/postgres.sh stop   stop it and remove its files
# tests/backup.rs reads target/test-postgres.env when the variables are unset
# (never under CI, where the harness must export them).

_pg_log() { printf '[postgres] %s\n' "$*" >&2; }

_pg_sudo() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# The newest /usr/lib/postgresql/NN/bin that has pg_ctl.
_pg_bin() {
    local d best=""
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/pg_ctl" ] && best="$d"
    done
    [ -n "$best" ] && echo "$best"
}

# Runs a server-side command as an unprivileged user: initdb and postgres
# refuse to run as root.
_pg_as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

_pg_port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

stackpin_pg_stop() {
    local dir="$1" bin="${2:-}"
    [ -n "$dir" ] && [ -d "$dir" ] || return 0
    [ -n "$bin" ] || bin="$(_pg_bin)" || true
    if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
        _pg_as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
}

stackpin_pg_setup() {
    local bin
    if ! bin="$(_pg_bin)"; then
        _pg_log "installing postgresql (pg_ctl not found under /usr/lib/postgresql)"
        _pg_sudo apt-get update -qq || return 1
        _pg_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null || return 1
        bin="$(_pg_bin)" || { _pg_log "error: postgresql installed but no pg_ctl found"; return 1; }
    fi
    local dir
    dir="$(mktemp -d "${TMPDIR:-/tmp}/stackpin-pg.XXXXXX")" || return 1
    chmod 0755 "$dir"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir"; fi
    if ! _pg_as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1; then
        _pg_log "error: initdb failed:"; cat "$dir/initdb.log" >&2
        rm -rf "$dir"; return 1
    fi
    local port="" try
    for try in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 40000))
        _pg_port_free "$port" || continue
        if _pg_as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
            -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null 2>&1; then
            break
        fi
        port=""
    done
    if [ -z "$port" ]; then
        _pg_log "error: the server did not start:"; tail -n 20 "$dir/server.log" >&2
        stackpin_pg_stop "$dir" "$bin"; return 1
    fi
    local url="postgresql://postgres@127.0.0.1:$port"
    if ! "$bin/psql" -q -v ON_ERROR_STOP=1 "$url/postgres" -c 'CREATE DATABASE stackpin_test' >/dev/null ||
        ! "$bin/psql" -q -v ON_ERROR_STOP=1 "$url/stackpin_test" >/dev/null <<'SQL'
CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);
INSERT INTO items VALUES (1, 'alpha'), (2, 'beta'), (3, 'gamma | with a pipe');
SQL
    then
        _pg_log "error: creating the test database failed"
        stackpin_pg_stop "$dir" "$bin"; return 1
    fi
    export STACKPIN_TEST_PG_URL="$url"
    export STACKPIN_TEST_PG_BIN="$bin"
    export STACKPIN_TEST_PG_DB=stackpin_test
    STACKPIN_TEST_PG_DIR="$dir"
    _pg_log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data in $dir)"
}

_pg_env_file() {
    echo "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/test-postgres.env"
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    # Sourced by scripts/test.sh.
    stackpin_pg_setup || return 1
    if declare -F stackpin_on_exit >/dev/null; then
        stackpin_on_exit "stackpin_pg_stop '$STACKPIN_TEST_PG_DIR' '$STACKPIN_TEST_PG_BIN'"
    fi
else
    set -euo pipefail
    env_file="$(_pg_env_file)"
    case "${1:-start}" in
    start)
        if [ -f "$env_file" ]; then
            # shellcheck disable=SC1090
            . "$env_file"
            if [ -n "${STACKPIN_TEST_PG_BIN:-}" ] &&
                "$STACKPIN_TEST_PG_BIN/pg_isready" -q -d "$STACKPIN_TEST_PG_URL/postgres" 2>/dev/null; then
                _pg_log "reusing $STACKPIN_TEST_PG_URL ($env_file)"
                exit 0
            fi
            stackpin_pg_stop "${STACKPIN_TEST_PG_DIR:-}" "${STACKPIN_TEST_PG_BIN:-}"
        fi
        stackpin_pg_setup
        mkdir -p "$(dirname "$env_file")"
        {
            echo "# written by scripts/setup.d/postgres.sh at $(date -u +%Y-%m-%dT%H:%M:%SZ); stop: bash scripts/setup.d/postgres.sh stop"
            echo "export STACKPIN_TEST_PG_URL=$STACKPIN_TEST_PG_URL"
            echo "export STACKPIN_TEST_PG_BIN=$STACKPIN_TEST_PG_BIN"
            echo "export STACKPIN_TEST_PG_DB=$STACKPIN_TEST_PG_DB"
            echo "export STACKPIN_TEST_PG_DIR=$STACKPIN_TEST_PG_DIR"
        } >"$env_file.tmp" && mv "$env_file.tmp" "$env_file"
        _pg_log "wrote $env_file"
        ;;
    stop)
        if [ -f "$env_file" ]; then
            # shellcheck disable=SC1090
            . "$env_file"
            stackpin_pg_stop "${STACKPIN_TEST_PG_DIR:-}" "${STACKPIN_TEST_PG_BIN:-}"
            rm -f "$env_file"
            _pg_log "stopped"
        fi
        ;;
    *)
        echo "usage: $0 [start|stop]" >&2
        exit 2
        ;;
    esac
fi
