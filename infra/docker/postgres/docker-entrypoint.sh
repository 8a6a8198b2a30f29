#!/bin/bash
# Initialises an empty data directory once (owner from POSTGRES_USER with the password in
# POSTGRES_PASSWORD_FILE, database POSTGRES_DB, password logins over TCP), then runs the server
# as the postgres user with the command's `-c` settings.
set -euo pipefail
if [[ "$(id -u)" == 0 ]]; then
  install -d -o postgres -g postgres -m 0700 "$PGDATA"
  chown -R postgres:postgres "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
[[ "${1:-}" == postgres ]] || exec "$@"
shift
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  pwfile="$(mktemp)"
  if [[ -n "${POSTGRES_PASSWORD_FILE:-}" ]]; then
    tr -d '\r\n' < "$POSTGRES_PASSWORD_FILE" > "$pwfile"
  else
    printf '%s' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE is required}" > "$pwfile"
  fi
  initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 > /dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  if [[ "$db" != postgres ]]; then
    pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start > /dev/null
    psql -v ON_ERROR_STOP=1 -U "$user" -d postgres -q -c "CREATE DATABASE \"$db\" OWNER \"$user\""
    pg_ctl -D "$PGDATA" -w -m fast stop > /dev/null
  fi
  echo "database $db initialised"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
