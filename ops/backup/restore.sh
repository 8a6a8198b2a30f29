#!/usr/bin/env bash
# Restore a backup.sh dump into a new or empty database, then check its schema version against
# the migrations this checkout knows (what `python -m shared.migrate` would apply or refuse).
#
#   RESTORE_DATABASE=antrean_restored PGDATABASE=antrean ... ops/backup/restore.sh backups/X.dump
#
# RESTORE_DATABASE: the target (required; created when missing, refused when it holds any
# table). PGDATABASE and the other connection variables (common.sh) name the server and a
# database to connect to while creating the target. The target's owner is the connecting user;
# the grants to the services' roles are restored, and those roles are created (NOLOGIN, as the
# migrations do) when the server lacks them: give them logins with `python -m shared.migrate`.
# Exits non-zero on a checksum mismatch, an unreadable dump, any error of the restore (one
# transaction: nothing half-restored) or a schema this checkout does not know.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

dump="${1:?usage: restore.sh DUMP_FILE (RESTORE_DATABASE names the target database)}"
target="${RESTORE_DATABASE:?set RESTORE_DATABASE to the database to restore into}"
SERVICE_ROLES="${SERVICE_ROLES:-antrean_api antrean_worker}"
[[ -f "$dump" ]] || die "no dump file $dump"
[[ -f "$dump.sha256" ]] || die "no checksum file $dump.sha256: refusing an unverified dump"
(cd "$(dirname "$dump")" && sha256sum --check --status "$(basename "$dump").sha256") \
  || die "$dump does not match its checksum $dump.sha256: the file is damaged"
say "restore: $dump matches its checksum"

exists="$(sql "$PGDATABASE" "select 1 from pg_database where datname = :'target'" "target=$target")"
created=""
if [[ -z "$exists" ]]; then
  sql "$PGDATABASE" 'create database :"target" template template0' "target=$target" > /dev/null
  created=1
  say "restore: created database $target"
else
  tables="$(sql "$target" "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where c.relkind in ('r', 'p', 'v', 'm', 'S') and n.nspname not in ('pg_catalog', 'information_schema')
      and n.nspname not like 'pg_toast%'")"
  [[ "$tables" == 0 ]] || die "database $target is not empty ($tables relations): restore into a new or empty one"
fi
# A failed restore leaves no database behind that it created.
trap '[[ -n "$created" ]] && sql "$PGDATABASE" "drop database if exists :\"target\" with (force)" "target=$target" > /dev/null' EXIT

for role in $SERVICE_ROLES; do
  sql "$PGDATABASE" "select format('create role %I nologin', :'role')
    where not exists (select 1 from pg_roles where rolname = :'role') \\gexec" "role=$role" > /dev/null
done

started=$SECONDS
"${PG_EXEC_ARGS[@]}" pg_restore "${CONN_ARGS[@]}" --dbname="$target" --no-owner \
  --exit-on-error --single-transaction < "$dump" \
  || die "pg_restore of $dump into $target failed (nothing was restored)"
say "restore: $dump restored into $target in $((SECONDS - started)) s"

# The schema version: every migration the backup recorded must be a file here, unchanged.
recorded="$(sql "$target" "select name || ' ' || checksum from schema_migrations order by name" 2> /dev/null)" \
  || die "$target has no schema_migrations table: not a backup of this application"
latest=""
while read -r name checksum; do
  [[ -z "$name" ]] && continue
  file="$MIGRATIONS_DIR/$name"
  [[ -f "$file" ]] || die "the backup has migration $name, which $MIGRATIONS_DIR lacks: it is from a newer release; restore with that release"
  [[ "$(sha256sum < "$file" | cut -d' ' -f1)" == "$checksum" ]] \
    || die "migration $name differs from the one the backup applied"
  latest="$name"
done <<< "$recorded"
[[ -n "$latest" ]] || die "$target records no migration"
pending=()
for file in "$MIGRATIONS_DIR"/[0-9][0-9][0-9][0-9]*.sql; do
  grep -qx "$(basename "$file") .*" <<< "$recorded" || pending+=("$(basename "$file")")
done
created=""
if ((${#pending[@]})); then
  say "restore: schema version $latest; ${#pending[@]} newer migration(s) to apply with python -m shared.migrate: ${pending[*]}"
else
  say "restore: schema version $latest (every migration of this release applied)"
fi
printf '%s\n' "$latest"
