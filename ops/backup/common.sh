# Sourced by backup.sh, restore.sh and restore-drill.sh: the connection and the client programs.
#
# The database is named by libpq's variables: PGDATABASE (required), PGHOST, PGPORT, PGUSER,
# PGSSLMODE, ... The password never goes on a command line: PGPASSFILE (a ~/.pgpass-format
# file) or PGPASSWORD_FILE (a file holding only the password; exported as PGPASSWORD).
# PG_EXEC is a command prefix the PostgreSQL client programs run under, e.g.
# PG_EXEC="docker compose exec -T postgres" to use the compose service's own pg_dump and psql
# over its local socket; files stay on this host (streamed through stdin and stdout).
set -euo pipefail

BACKUP_TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MIGRATIONS_DIR="${MIGRATIONS_DIR:-$BACKUP_TOOLS/../../migrations}"
read -r -a PG_EXEC_ARGS <<< "${PG_EXEC:-}"

say() { printf '%s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

: "${PGDATABASE:?set PGDATABASE (and PGHOST, PGPORT, PGUSER) to the application database}"
if [[ -n "${PGPASSWORD_FILE:-}" ]]; then
  [[ -r "$PGPASSWORD_FILE" ]] || die "PGPASSWORD_FILE $PGPASSWORD_FILE is not readable"
  PGPASSWORD="$(< "$PGPASSWORD_FILE")"
  export PGPASSWORD
fi

# Host, port and user go on the command line too (not secret), so they reach a client run
# under PG_EXEC, whose environment is the container's.
CONN_ARGS=()
[[ -n "${PGHOST:-}" ]] && CONN_ARGS+=(-h "$PGHOST")
[[ -n "${PGPORT:-}" ]] && CONN_ARGS+=(-p "$PGPORT")
[[ -n "${PGUSER:-}" ]] && CONN_ARGS+=(-U "$PGUSER")
CONN_ARGS+=(-w)  # never prompt: a missing password is an error

# pg PROGRAM ARGS...: a client program connected as above (the database is an argument).
pg() {
  local program="$1"
  shift
  "${PG_EXEC_ARGS[@]}" "$program" "${CONN_ARGS[@]}" "$@"
}

# sql DATABASE QUERY [NAME=VALUE...]: the rows of a query (tab-separated, no headers); the
# values are psql variables, quoted in the query as :'NAME' (literal) or :"NAME" (identifier).
sql() {
  local database="$1" query="$2" vars=() pair
  shift 2
  for pair in "$@"; do vars+=(-v "$pair"); done
  printf '%s\n' "$query" | pg psql -X -q -A -t -F $'\t' -v ON_ERROR_STOP=1 "${vars[@]}" -d "$database" -f -
}
