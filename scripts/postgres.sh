#!/usr/bin/env bash
# Install (from Debian's packages), start and prepare the PostgreSQL 15 that Slicehub's tests use.
#
#   scripts/postgres.sh     -> prints postgresql+psycopg://slicehub:slicehub@127.0.0.1:5432/slicehub_test
#
# Idempotent and quiet: a warm run only checks, and prints the URL. What it makes sure of:
#   - packages postgresql (15) installed: `apt-get update` only when apt knows no candidate or the
#     install fails with stale lists;
#   - cluster 15/main exists, listens on loopback only (localhost / 127.0.0.1), port 5432;
#   - it runs (pg_ctlcluster, no systemd) and answers pg_isready;
#   - max_connections >= 300 (tests hold 200 connections at once): ALTER SYSTEM + restart if lower;
#   - role slicehub (LOGIN CREATEDB, password slicehub) and database slicehub_test owned by it.
# Fast path, no root needed: if slicehub can already log in and max_connections is high enough,
# nothing else is done. Everything else needs root (CI runs as root).
#
# Exit status: 0 ready; 3 PostgreSQL is not usable and cannot be installed or started here (not
# root, no apt-get, apt-get failed); 1 anything else. Output of the steps is shown only on failure.
set -euo pipefail

PG_VERSION=15
PG_CLUSTER=main
PG_HOST=127.0.0.1
PG_PORT=5432
PG_ROLE=slicehub
PG_PASSWORD=slicehub
PG_DATABASE=slicehub_test
MIN_MAX_CONNECTIONS=300
READY_TIMEOUT_S=60
LOCK_FILE=/tmp/slicehub-postgres.lock

URL="postgresql+psycopg://${PG_ROLE}:${PG_PASSWORD}@${PG_HOST}:${PG_PORT}/${PG_DATABASE}"
LIBPQ_URL="postgresql://${PG_ROLE}:${PG_PASSWORD}@${PG_HOST}:${PG_PORT}/${PG_DATABASE}"

SCRIPT=postgres.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# psql as the superuser over the Unix socket; `cd /` because postgres cannot read root's cwd.
as_superuser() {
	(cd / && runuser -u postgres -- psql -X -q -A -t -v ON_ERROR_STOP=1 -p "$PG_PORT" "$@")
}

# Prints "max_connections|listen_addresses" when slicehub can log in to its database, fails otherwise.
slicehub_view() {
	command -v psql >/dev/null 2>&1 || return 1
	PGCONNECT_TIMEOUT=3 psql -X -q -A -t -w "$LIBPQ_URL" \
		-c "SELECT current_setting('max_connections') || '|' || current_setting('listen_addresses')" 2>/dev/null
}

installed() {
	command -v pg_ctlcluster >/dev/null 2>&1 && [[ -x /usr/lib/postgresql/$PG_VERSION/bin/postgres ]]
}

install_packages() {
	command -v apt-get >/dev/null 2>&1 || die 3 "PostgreSQL $PG_VERSION is not installed and there is no apt-get"
	export DEBIAN_FRONTEND=noninteractive
	local candidate
	candidate=$(apt-cache policy postgresql 2>/dev/null | awk '/Candidate:/ {print $2}')
	if [[ -z $candidate || $candidate == "(none)" ]]; then
		quietly apt-get update -qq || die 3 "apt-get update failed"
	fi
	# Lists older than the mirror name files that are gone: update once, then try again.
	if ! quietly apt-get install -y -qq postgresql; then
		quietly apt-get update -qq || die 3 "apt-get update failed"
		quietly apt-get install -y -qq postgresql || die 3 "apt-get install postgresql failed"
	fi
	installed || die 1 "apt-get installed postgresql but /usr/lib/postgresql/$PG_VERSION/bin/postgres is missing"
}

# "15 main 5432 online postgres /var/lib/... /var/log/..." -> the named field of our cluster.
cluster_field() {
	pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" -v f="$1" '$1 == v && $2 == c {print $f}'
}

wait_until_ready() {
	local deadline=$((SECONDS + READY_TIMEOUT_S))
	until pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; do
		((SECONDS < deadline)) || die 1 "no answer from pg_isready on $PG_HOST:$PG_PORT after ${READY_TIMEOUT_S}s; log: $(cluster_field 7)"
		sleep 0.2
	done
}

# ---- fast path: already prepared (any user) ----------------------------------------------------
if view=$(slicehub_view) && ((${view%%|*} >= MIN_MAX_CONNECTIONS)) &&
	[[ ${view#*|} == localhost || ${view#*|} == 127.0.0.1 ]]; then
	echo "$URL"
	exit 0
fi

((EUID == 0)) || die 3 "PostgreSQL is not ready at $PG_HOST:$PG_PORT (as $PG_ROLE, max_connections >= $MIN_MAX_CONNECTIONS) and preparing it needs root: sudo $0"

# Two test runs starting at once must not both install or create.
exec 9>"$LOCK_FILE"
flock 9

installed || install_packages

if [[ -z $(cluster_field 1) ]]; then
	quietly pg_createcluster "$PG_VERSION" "$PG_CLUSTER" --port "$PG_PORT" || die 1 "pg_createcluster failed"
fi
port=$(cluster_field 3)
[[ $port == "$PG_PORT" ]] || die 1 "cluster $PG_VERSION/$PG_CLUSTER is configured for port $port, not $PG_PORT"

if [[ $(cluster_field 4) != online* ]]; then
	quietly pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start || die 1 "pg_ctlcluster $PG_VERSION $PG_CLUSTER start failed"
fi
wait_until_ready

# The test role has a published password: a server that listens beyond loopback is stopped.
listen=$(as_superuser -c 'SHOW listen_addresses')
case $listen in
localhost | 127.0.0.1) ;;
*)
	quietly pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" stop || true
	die 1 "cluster $PG_VERSION/$PG_CLUSTER has listen_addresses = '$listen' (stopped it); Slicehub's test server listens on localhost / 127.0.0.1 only"
	;;
esac

max_connections=$(as_superuser -c 'SHOW max_connections')
if ((max_connections < MIN_MAX_CONNECTIONS)); then
	as_superuser -c "ALTER SYSTEM SET max_connections = $MIN_MAX_CONNECTIONS"
	quietly pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" restart || die 1 "pg_ctlcluster $PG_VERSION $PG_CLUSTER restart failed"
	wait_until_ready
fi

if [[ -z $(as_superuser -c "SELECT 1 FROM pg_roles WHERE rolname = '$PG_ROLE'") ]]; then
	as_superuser -c "CREATE ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_PASSWORD'"
else
	# Converge a role that exists but was changed (password, attributes).
	as_superuser -c "ALTER ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_PASSWORD'"
fi
if [[ -z $(as_superuser -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DATABASE'") ]]; then
	as_superuser -c "CREATE DATABASE $PG_DATABASE OWNER $PG_ROLE"
fi

# Checked end to end, the way the tests will connect (TCP, password).
view=$(slicehub_view) || die 1 "$PG_ROLE cannot log in over TCP at $PG_HOST:$PG_PORT (pg_hba.conf?)"
((${view%%|*} >= MIN_MAX_CONNECTIONS)) || die 1 "max_connections is ${view%%|*} after the restart, expected >= $MIN_MAX_CONNECTIONS"
echo "$URL"
