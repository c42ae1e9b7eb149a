#!/usr/bin/env bash
# A throwaway cluster of Debian's PostgreSQL (the distribution's major version, 15 on Debian 12),
# so the tests also run on a second major version beside the embedded server's 16.
#
#   .ci/system_postgres.sh          install postgresql and pgbouncer if missing, start the
#                                   cluster (or find it running) and print, as the last line of
#                                   stdout, the DATABASE_URL to test with
#   .ci/system_postgres.sh stop     stop the cluster and delete it
#
# The cluster lives in KONGFLOW_PG_DIR (default /tmp/kongflow-system-pg), listens on 127.0.0.1
# only, on KONGFLOW_PG_PORT (default 55432, or a free port if that one is taken), has a superuser
# role `kongflow` and a database `kongflow`, both trusted from 127.0.0.1 and the cluster's own
# socket directory. It runs without fsync: a crash may lose it, which a test cluster can afford.
# PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` system user.
set -euo pipefail

dir="${KONGFLOW_PG_DIR:-/tmp/kongflow-system-pg}"
data="$dir/data"
role=kongflow
database=kongflow

say() { echo "system_postgres: $*" >&2; }

sudo=()
if [ "$(id -u)" != 0 ]; then sudo=(sudo); fi

# The newest installed major version's binaries (Debian installs them side by side).
pg_bin() {
    printf '%s\n' /usr/lib/postgresql/*/bin/initdb | grep -v '\*' | sort -V | tail -n 1 \
        | xargs -r dirname
}

# As the cluster's owner: `postgres` when we are root, else ourselves.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

running() {
    [ -f "$data/PG_VERSION" ] && as_owner "$(pg_bin)/pg_ctl" -D "$data" status >/dev/null 2>&1
}

# Taken if it cannot be bound: a listener, but also a socket merely bound to it (an outgoing
# connection given it as its ephemeral port), which a connection attempt would not find.
port_taken() {
    ! python3 -c 'import socket, sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' \
        "$1" 2>/dev/null
}

url() { echo "postgresql://$role@127.0.0.1:$(cat "$dir/port")/$database"; }

if [ "${1:-}" = stop ]; then
    if running; then
        as_owner "$(pg_bin)/pg_ctl" -D "$data" -m fast -w stop >&2
    fi
    rm -rf "$dir"
    exit 0
fi

# Debian's packages, once. No default cluster: the package would otherwise create and start one
# on port 5432, which nothing here uses.
pgbouncer_installed() { command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; }
missing=()
if [ -z "$(pg_bin)" ]; then missing+=(postgresql); fi
if ! pgbouncer_installed; then missing+=(pgbouncer); fi
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        "${sudo[@]}" mkdir -p /etc/postgresql-common
        echo "create_main_cluster = false" \
            | "${sudo[@]}" tee /etc/postgresql-common/createcluster.conf >/dev/null
    fi
    "${sudo[@]}" apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >&2
fi
bin="$(pg_bin)"
if [ -z "$bin" ]; then
    say "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin after installing postgresql"
    exit 1
fi

if running; then
    say "already running ($("$bin/postgres" --version))"
    url
    exit 0
fi

# A new cluster (a stopped or half-made one is discarded: it holds nothing worth keeping).
rm -rf "$dir"
mkdir -p "$dir"
chmod 700 "$dir"
if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$dir"; fi
port="${KONGFLOW_PG_PORT:-55432}"
if port_taken "$port"; then
    if [ -n "${KONGFLOW_PG_PORT:-}" ]; then
        say "port $port (KONGFLOW_PG_PORT) is taken"
        exit 1
    fi
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')"
fi
echo "$port" >"$dir/port"

say "initialising $("$bin/postgres" --version) in $data"
as_owner "$bin/initdb" -D "$data" -U "$role" --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
    --no-instructions >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
as_owner tee -a "$data/postgresql.conf" >/dev/null <<EOF

# kongflow's test cluster
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
as_owner "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start >&2 \
    || { cat "$dir/server.log" >&2; exit 1; }
as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U "$role" -d postgres -qAtX \
    -c "create database $database" >&2
say "running on 127.0.0.1:$port (stop it with: $0 stop)"
url
