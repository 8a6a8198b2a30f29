#!/usr/bin/env bash
# Back up the application database: pg_dump custom format into BACKUP_DIR as
# <database>-<UTC time>.dump with a .sha256 beside it, keeping the BACKUP_KEEP newest.
#
#   PGDATABASE=antrean PGHOST=db.internal PGUSER=antrean PGPASSWORD_FILE=secrets/postgres_password \
#     BACKUP_DIR=/var/backups/antrean ops/backup/backup.sh
#   PG_EXEC="docker compose exec -T postgres" PGUSER=antrean PGDATABASE=antrean ops/backup/backup.sh
#
# BACKUP_DIR (default ./backups), BACKUP_KEEP (default 14; 0 keeps all), BACKUP_SNAPSHOT (an
# exported snapshot to dump, used by the restore drill). Connection: see common.sh.
# Prints the dump's path on stdout; exits non-zero, leaving no new file, on any failure.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BACKUP_DIR="${BACKUP_DIR:-./backups}"
BACKUP_KEEP="${BACKUP_KEEP:-14}"
[[ "$BACKUP_KEEP" =~ ^[0-9]+$ ]] || die "BACKUP_KEEP must be a number (0 keeps every backup)"
mkdir -p "$BACKUP_DIR"
chmod 700 "$BACKUP_DIR"  # a dump holds patients' names
umask 077

name="$PGDATABASE-$(date -u +%Y%m%dT%H%M%SZ).dump"
file="$BACKUP_DIR/$name"
[[ -e "$file" ]] && die "$file exists already (one backup per second at most)"
partial="$file.partial"
trap 'rm -f "$partial"' EXIT

dump_args=(--format=custom --compress=6 --no-password)
[[ -n "${BACKUP_SNAPSHOT:-}" ]] && dump_args+=("--snapshot=$BACKUP_SNAPSHOT")
started=$SECONDS
pg pg_dump "${dump_args[@]}" -d "$PGDATABASE" > "$partial" \
  || die "pg_dump of $PGDATABASE failed; no backup written"
# The archive's table of contents must read back before the dump counts as a backup.
"${PG_EXEC_ARGS[@]}" pg_restore --list < "$partial" > /dev/null \
  || die "the dump of $PGDATABASE does not read back; no backup written"
mv "$partial" "$file"
(cd "$BACKUP_DIR" && sha256sum "$name" > "$name.sha256")
say "backup: $file ($(du -h "$file" | cut -f1), $((SECONDS - started)) s), checksum $name.sha256"

if ((BACKUP_KEEP > 0)); then
  mapfile -t old < <(find "$BACKUP_DIR" -maxdepth 1 -name "$PGDATABASE-*Z.dump" -printf '%f\n' \
    | sort | head -n "-$BACKUP_KEEP")
  for stale in "${old[@]}"; do
    rm -f "$BACKUP_DIR/$stale" "$BACKUP_DIR/$stale.sha256"
    say "backup: removed $stale (keeping the newest $BACKUP_KEEP)"
  done
fi
printf '%s\n' "$file"
