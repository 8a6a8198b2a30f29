#!/usr/bin/env bash
# The restore drill: back up the live database, restore the dump into a scratch database on the
# same server, and prove the copy whole; prints a report, exits non-zero on any difference, and
# drops the scratch database (and the drill's dump) at the end.
#
#   PGDATABASE=antrean PGHOST=... PGUSER=antrean PGPASSWORD_FILE=... ops/backup/restore-drill.sh
#   PG_EXEC="docker compose exec -T postgres" PGUSER=antrean PGDATABASE=antrean ops/backup/restore-drill.sh
#
# Compared between the live database and the copy, both as of the dump's own snapshot (so the
# drill is exact while the services keep writing): the row count of every table, the latest
# migration, the outbox rows not yet published and the BPJS sync jobs not yet synced (pending,
# failed), row by row. DRILL_DATABASE names the scratch database (default
# <PGDATABASE>_drill_<time>); the user needs CREATEDB. DRILL_BEFORE_VERIFY_SQL is SQL run in
# the copy before it is checked: only for proving that the drill catches a damaged copy.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

scratch="${DRILL_DATABASE:-${PGDATABASE}_drill_$(date -u +%Y%m%d%H%M%S)}"
[[ "$scratch" != "$PGDATABASE" ]] || die "DRILL_DATABASE must not be the live database"
work="$(mktemp -d)"
cleanup() {
  local rc=$?
  [[ -n "${SNAP_PID:-}" ]] && kill "$SNAP_PID" 2> /dev/null
  if [[ -n "$(sql "$PGDATABASE" "select 1 from pg_database where datname = :'db'" "db=$scratch" 2> /dev/null)" ]]; then
    sql "$PGDATABASE" 'drop database :"db" with (force)' "db=$scratch" > /dev/null \
      && say "drill: dropped scratch database $scratch" \
      || say "drill: could not drop scratch database $scratch: drop it by hand"
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT

# What must survive, one "check<TAB>value" line each.
read -r -d '' FACTS << 'SQL' || true
select 'rows ' || n.nspname || '.' || c.relname,
       (xpath('/row/c/text()', query_to_xml(format('select count(*) as c from %I.%I', n.nspname, c.relname),
                                            false, true, '')))[1]::text
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema')
   and n.nspname not like 'pg_toast%'
 order by 1;
select 'latest migration', coalesce(max(name), '-') from schema_migrations;
select 'outbox unpublished', count(*) || ' rows ' || coalesce(md5(string_agg(
         concat_ws(':', id, event_id, topic, kafka_key, md5(payload), attempts, quarantined_at is not null),
         ',' order by id)), '-')
  from outbox where published_at is null;
select 'sync jobs not synced', count(*) || ' rows ' || coalesce(md5(string_agg(
         concat_ws(':', queue_id, cancel_event_id, status, will_retry, warned, cancel_done, task99_done,
                   attempts, extract(epoch from next_attempt_at), lease_owner),
         ',' order by queue_id)), '-')
  from bpjs_sync_job where status in ('pending', 'failed');
SQL

# One repeatable-read transaction exports the snapshot pg_dump dumps, and counts the live facts
# in that same snapshot; it stays open (holding the snapshot) until pg_dump has finished.
mkfifo "$work/to_psql"
{
  "${PG_EXEC_ARGS[@]}" psql "${CONN_ARGS[@]}" -X -q -A -t -F $'\t' -v ON_ERROR_STOP=1 -d "$PGDATABASE" \
    < "$work/to_psql" > "$work/live.out" 2> "$work/live.err"
} &
SNAP_PID=$!
exec 3> "$work/to_psql"
printf '%s\n' 'begin isolation level repeatable read read only;' \
  'select pg_export_snapshot();' "$FACTS" '\echo ==facts-done==' >&3
for _ in $(seq 600); do
  grep -q '^==facts-done==$' "$work/live.out" 2> /dev/null && break
  kill -0 "$SNAP_PID" 2> /dev/null || die "reading the live database failed: $(cat "$work/live.err")"
  sleep 0.1
done
grep -q '^==facts-done==$' "$work/live.out" || die "the live database did not answer within 60 s"
snapshot="$(head -n 1 "$work/live.out")"
sed -n '2,/^==facts-done==$/p' "$work/live.out" | grep -v '^==facts-done==$' > "$work/live.facts"

dump="$(BACKUP_DIR="$work/dump" BACKUP_KEEP=0 BACKUP_SNAPSHOT="$snapshot" \
  bash "$BACKUP_TOOLS/backup.sh")" || die "the backup failed"
printf '%s\n' 'commit;' >&3
exec 3>&-
wait "$SNAP_PID" || die "the live snapshot's transaction failed: $(cat "$work/live.err")"
SNAP_PID=""

RESTORE_DATABASE="$scratch" bash "$BACKUP_TOOLS/restore.sh" "$dump" > /dev/null \
  || die "the restore into $scratch failed"
if [[ -n "${DRILL_BEFORE_VERIFY_SQL:-}" ]]; then
  say "drill: running DRILL_BEFORE_VERIFY_SQL in the copy"
  sql "$scratch" "$DRILL_BEFORE_VERIFY_SQL" > /dev/null
fi
sql "$scratch" "$FACTS" > "$work/copy.facts" || die "reading the restored copy failed"

declare -A live copy
while IFS=$'\t' read -r check value; do live[$check]="$value"; done < "$work/live.facts"
while IFS=$'\t' read -r check value; do copy[$check]="$value"; done < "$work/copy.facts"
((${#live[@]})) || die "no facts read from the live database"
mapfile -t checks < <(printf '%s\n' "${!live[@]}" "${!copy[@]}" | sort -u)
differences=()
echo "restore drill: $PGDATABASE -> $scratch (dump $(basename "$dump"), $(du -h "$dump" | cut -f1))"
for check in "${checks[@]}"; do
  want="${live[$check]-(absent)}"
  got="${copy[$check]-(absent)}"
  if [[ "$want" == "$got" ]]; then
    printf '  ok    %-36s %s\n' "$check" "$want"
  else
    printf '  DIFF  %-36s live %s, restored %s\n' "$check" "$want" "$got"
    differences+=("$check")
  fi
done
if ((${#differences[@]})); then
  echo "restore drill FAILED: ${#differences[@]} difference(s): $(IFS=,; echo "${differences[*]}" | sed 's/,/, /g')"
  exit 1
fi
echo "restore drill passed: ${#checks[@]} checks equal"
