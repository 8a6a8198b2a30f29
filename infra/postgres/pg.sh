#!/usr/bin/env bash
# Native PostgreSQL 15 cluster for dev and tests, run as the `postgres` user (it refuses root):
# start | stop | status. Creates the role and database of DATABASE_URL on first start, and
# the services' own roles (login with fixed dev passwords).
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
PGDATA_DIR="${PGDATA_DIR:-$DATA_DIR/postgres}"
AS_PG=()
if [[ "$(id -u)" == 0 ]]; then AS_PG=(runuser -u postgres --); fi
DB_NAME="${DATABASE_URL##*/}"; DB_NAME="${DB_NAME%%\?*}"
CREDS="${DATABASE_URL#*://}"; CREDS="${CREDS%%@*}"
DB_USER="${CREDS%%:*}"; DB_PASS="${CREDS#*:}"
declare -A DEV_ROLE_PASS=([antrean_api]=antrean-api-dev [antrean_worker]=antrean-worker-dev)

init() {
  [[ -f "$PGDATA_DIR/PG_VERSION" ]] && return 0
  say postgres "initialising cluster in $PGDATA_DIR"
  mkdir -p "$PGDATA_DIR"
  if [[ "$(id -u)" == 0 ]]; then
    chown postgres:postgres "$PGDATA_DIR"
    # the postgres user must be able to reach the data folder through every parent
    local d="$PGDATA_DIR"; while [[ "$d" != / ]]; do d="$(dirname "$d")"; chmod o+x "$d" 2>/dev/null || true; done
  fi
  "${AS_PG[@]}" "$PG_BIN/initdb" -D "$PGDATA_DIR" -U postgres --auth-local=peer \
    --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 > "$LOG_DIR/postgres-init.log"
  cat >> "$PGDATA_DIR/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PGDATA_DIR'
max_connections = 300
shared_buffers = 256MB
fsync = on
synchronous_commit = on
log_min_messages = warning
CONF
}

psql_admin() { "${AS_PG[@]}" "$PG_BIN/../bin/psql" -h "$PGDATA_DIR" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

ensure_db() {
  if [[ "$(psql_admin -c "select 1 from pg_roles where rolname='$DB_USER'")" != 1 ]]; then
    psql_admin -c "create role \"$DB_USER\" login createdb password '$DB_PASS'"
  fi
  # tests drop their databases WITH (FORCE), which may have to stop an autovacuum worker
  psql_admin -c "grant pg_signal_backend to \"$DB_USER\"" 2> /dev/null
  # The migrations create one role per service (0006): the migrating user needs CREATEROLE.
  psql_admin -c "alter role \"$DB_USER\" createrole"
  # Each service logs in as its own role; these fixed dev passwords are the ones the services
  # (infra/services.sh) and the tests use, and production refuses them (shared/config.py).
  local role pass
  for role in "${!DEV_ROLE_PASS[@]}"; do
    pass="${DEV_ROLE_PASS[$role]}"
    if [[ "$(psql_admin -c "select 1 from pg_roles where rolname='$role'")" != 1 ]]; then
      psql_admin -c "create role \"$role\" login password '$pass'"
    else
      psql_admin -c "alter role \"$role\" login password '$pass'"
    fi
  done
  if [[ "$(psql_admin -c "select 1 from pg_database where datname='$DB_NAME'")" != 1 ]]; then
    psql_admin -c "create database \"$DB_NAME\" owner \"$DB_USER\""
    say postgres "created database $DB_NAME"
  fi
}

start() {
  init
  if "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" status > /dev/null 2>&1; then
    say postgres "already running on 127.0.0.1:$PG_PORT"
  elif port_open "$PG_PORT"; then
    say postgres "port $PG_PORT is taken by another server; using it as is"; return 0
  else
    say postgres "starting (log: $LOG_DIR/postgres.log)"
    touch "$LOG_DIR/postgres.log"; chown postgres "$LOG_DIR/postgres.log" 2>/dev/null || true
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$LOG_DIR/postgres.log" -w -t 60 start > /dev/null
  fi
  ensure_db
  say postgres "ready on 127.0.0.1:$PG_PORT (database $DB_NAME)"
}

stop() {
  if [[ -f "$PGDATA_DIR/PG_VERSION" ]] && "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" status > /dev/null 2>&1; then
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop > /dev/null
    say postgres "stopped"
  fi
}

status() {
  if port_open "$PG_PORT"; then say postgres "running on 127.0.0.1:$PG_PORT"; else say postgres "not running"; return 1; fi
}

"${1:-status}"
