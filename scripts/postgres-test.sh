#!/usr/bin/env bash
# A PostgreSQL 15 server on 127.0.0.1 for the database-store tests (tests/test_store_pg*.py).
#
#   scripts/postgres-test.sh start    install what is missing, create the cluster, start it, create the test role/db
#   scripts/postgres-test.sh status   print the test URL; exit 1 unless it accepts the test role's password
#   scripts/postgres-test.sh stop     stop the cluster this script created
#
# Root on Debian 12, no systemd: Debian's own cluster tools (pg_createcluster, pg_ctlcluster)
# manage a cluster of our own, "mfcl" on port $MFCL_PG_PORT (default 5433), listening on
# 127.0.0.1 only, with password (scram-sha-256) authentication over TCP. Idempotent: `start`
# on a running, configured cluster changes nothing. The tests read the URL from $MFCL_PG_URL
# (default: the role, password and database below).
set -euo pipefail

SVC_NAME=postgres-test
source "$(dirname "${BASH_SOURCE[0]}")/lib-daemons.sh"

VERSION=15
CLUSTER=mfcl
PORT=${MFCL_PG_PORT:-5433}
ROLE=mfcl_test
PASSWORD=mfcl-test-pw  # a throwaway role on a loopback-only test server
DATABASE=mfcl_test
URL="postgresql://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DATABASE"

as_postgres() { runuser -u postgres -- "$@"; }

ready() { PGPASSWORD=$PASSWORD psql -w -X -q -h 127.0.0.1 -p "$PORT" -U "$ROLE" -d "$DATABASE" -c 'select 1' >/dev/null 2>&1; }

install() {
    dpkg-query -W -f='${Status}' "postgresql-$VERSION" 2>/dev/null | grep -q 'install ok installed' && return 0
    svc_log "installing postgresql"
    export DEBIAN_FRONTEND=noninteractive
    flock /tmp/apt.lock apt-get update -qq >/dev/null || svc_die "apt-get update failed"
    flock /tmp/apt.lock apt-get install -y -qq --no-install-recommends postgresql >/dev/null \
        || svc_die "apt-get install postgresql failed"
}

create_cluster() {
    pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$VERSION $CLUSTER" && return 0
    svc_log "creating cluster $VERSION/$CLUSTER on 127.0.0.1:$PORT"
    pg_createcluster -q "$VERSION" "$CLUSTER" -p "$PORT" -- --auth-local=peer --auth-host=scram-sha-256 >/dev/null \
        || svc_die "pg_createcluster failed"
    local conf=/etc/postgresql/$VERSION/$CLUSTER/conf.d/mfcl-test.conf
    {
        echo "# Written by mfcl-sweeps scripts/postgres-test.sh"
        echo "listen_addresses = '127.0.0.1'"
        echo "max_connections = 200"
        # a test server: durability is not what is tested; speed of the suite is
        echo "fsync = off"
        echo "synchronous_commit = off"
    } >"$conf"
}

start() {
    svc_require_root
    install
    create_cluster
    if ! pg_lsclusters -h | awk -v c="$CLUSTER" '$2 == c {print $4}' | grep -q online; then
        svc_log "starting cluster $VERSION/$CLUSTER"
        pg_ctlcluster "$VERSION" "$CLUSTER" start || svc_die "pg_ctlcluster start failed" \
            "/var/log/postgresql/postgresql-$VERSION-$CLUSTER.log"
    fi
    svc_wait_for 30 as_postgres psql -X -q -p "$PORT" -c 'select 1' \
        || svc_die "the server does not answer" "/var/log/postgresql/postgresql-$VERSION-$CLUSTER.log"
    as_postgres psql -X -q -p "$PORT" -v ON_ERROR_STOP=1 >/dev/null <<SQL
SELECT 'CREATE ROLE $ROLE LOGIN CREATEDB' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$ROLE') \gexec
ALTER ROLE $ROLE PASSWORD '$PASSWORD';
SELECT 'CREATE DATABASE $DATABASE OWNER $ROLE' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$DATABASE') \gexec
SQL
    svc_wait_for 10 ready || svc_die "the test role cannot log in"
    svc_log "ready: $(redacted)"
}

redacted() { printf '%s\n' "${URL/:$PASSWORD@/:***@}"; }

status() {
    if ready; then
        redacted
    else
        svc_log "not running (start it with: sudo $0 start)"
        return 1
    fi
}

stop() {
    svc_require_root
    pg_lsclusters -h | awk -v c="$CLUSTER" '$2 == c {print $4}' | grep -q online || return 0
    pg_ctlcluster "$VERSION" "$CLUSTER" stop
}

case "${1:-}" in
start) start ;;
status) status ;;
stop) stop ;;
*) echo "usage: $0 start|status|stop" >&2; exit 2 ;;
esac
