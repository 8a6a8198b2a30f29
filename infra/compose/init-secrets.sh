#!/usr/bin/env bash
# Writes ./secrets/ for docker-compose.yml: random passwords for PostgreSQL, the services'
# database roles, Kafka's principals, the staff-token key and Grafana's admin (the `ops`
# profile), and the DSN each service uses.
# Existing files are kept (run it again after deleting one to rotate it). The BPJS keys and the
# per-clinic credentials file are placeholders: the services refuse them until you fill them in.
# Compose mounts a file secret as it is on the host, so each file must be readable by the
# container's own user (0644); the folder (0700) keeps other host users out.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
DIR="${HOST_SECRETS_DIR:-secrets}"
POSTGRES_USER="${POSTGRES_USER:-antrean}"
POSTGRES_DB="${POSTGRES_DB:-antrean}"
mkdir -p -m 0700 "$DIR"

random() { head -c32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
put() { # name value: write once
  if [[ ! -s "$DIR/$1" ]]; then
    printf '%s' "$2" > "$DIR/$1" && chmod 0644 "$DIR/$1" && echo "secrets/$1 written"
  fi
}
# No host in the DSNs: compose gives every app container PGHOST/PGPORT (POSTGRES_HOST and
# POSTGRES_PORT in .env), so moving to an external PostgreSQL changes variables, not secrets.
dsn() { printf 'postgresql://%s:%s@/%s' "$1" "$(cat "$DIR/$2")" "$POSTGRES_DB"; }

for name in postgres_password db_api_password db_worker_password auth_jwt_secret \
  kafka_admin_password kafka_controller_password kafka_api_password kafka_worker_password \
  kafka_notifier_password grafana_admin_password; do
  put "$name" "$(random)"
done
put migrate_database_url "$(dsn "$POSTGRES_USER" postgres_password)"
put api_database_url "$(dsn antrean_api db_api_password)"
put worker_database_url "$(dsn antrean_worker db_worker_password)"
put bpjs_secret_key change-me
put bpjs_user_key change-me
put bpjs-credentials.json '{}'
echo "fill in secrets/bpjs_secret_key, secrets/bpjs_user_key (and secrets/bpjs-credentials.json"
echo "for clinics with their own BPJS consumer) before starting in production"
