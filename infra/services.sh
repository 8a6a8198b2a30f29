#!/usr/bin/env bash
# Start/stop the project's Python services natively (pid files and logs under .data/):
# services.sh start|stop|status [name ...]. Only services that exist in the tree are started.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ALL=(bpjs_simulator cancel_api bpjs_sync_worker notifier)
declare -A PORT=([cancel_api]="${CANCEL_API_PORT:-8000}" [notifier]="${NOTIFIER_PORT:-8001}"
  [bpjs_sync_worker]="${WORKER_PORT:-6066}" [bpjs_simulator]="${BPJS_SIM_PORT:-8090}")
# Each service's own Kafka principal (infra/kafka/kafka.sh creates them and their passwords).
declare -A KAFKA_PRINCIPAL=([cancel_api]=api [bpjs_sync_worker]=worker [notifier]=notifier)

exists() { [[ -f "$REPO/services/$1/__main__.py" ]]; }

# Each service gets only what it uses: its own database role (fixed dev passwords, created by
# infra/postgres/pg.sh) and its ops port. APP_ENV=dev: settings default to production.
PG_HOSTPORT="127.0.0.1:$PG_PORT"; DB_NAME="${DATABASE_URL##*/}"; DB_NAME="${DB_NAME%%\?*}"
service_env() {
  case "$1" in
    cancel_api) echo "DATABASE_URL=postgresql://antrean_api:antrean-api-dev@$PG_HOSTPORT/$DB_NAME" \
      "OPS_PORT=${API_OPS_PORT:-8010}" ;;
    bpjs_sync_worker) echo "DATABASE_URL=postgresql://antrean_worker:antrean-worker-dev@$PG_HOSTPORT/$DB_NAME" ;;
    notifier) echo "OPS_PORT=${NOTIFIER_OPS_PORT:-8011}" ;;
  esac
}

start_one() {
  local name="$1" pidf="$RUN_DIR/$1.pid" log="$LOG_DIR/$1.log"
  exists "$name" || return 0
  if pid_alive "$pidf"; then say "$name" "already running (pid $(cat "$pidf"))"; return 0; fi
  # The subshell execs the service (`$!` is the service itself) with its own Kafka principal;
  # nothing may keep the caller's stdout open.
  cd "$REPO"
  # shellcheck disable=SC2046 # word splitting of NAME=value pairs is intended
  ( [[ -n "${KAFKA_PRINCIPAL[$name]:-}" ]] && kafka_principal_env "${KAFKA_PRINCIPAL[$name]}"
    exec setsid nohup env APP_ENV=dev $(service_env "$name") "$PY" -m "services.$name" ) \
    >> "$log" 2>&1 < /dev/null &
  echo $! > "$pidf"
  if ! wait_port "${PORT[$name]}" 60 "$name"; then tail -20 "$log" >&2; return 1; fi
  say "$name" "running on 127.0.0.1:${PORT[$name]} (pid $(cat "$pidf"), log $log)"
}

stop_one() {
  local pidf="$RUN_DIR/$1.pid"
  if pid_alive "$pidf"; then
    local pid; pid="$(cat "$pidf")"; kill -TERM "$pid"
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    say "$1" "stopped"
  fi
  rm -f "$pidf"
}

action="${1:-status}"; shift || true
names=("$@"); [[ ${#names[@]} -eq 0 ]] && names=("${ALL[@]}")
for n in "${names[@]}"; do
  case "$action" in
    start) start_one "$n" ;;
    stop) stop_one "$n" ;;
    status) exists "$n" && { pid_alive "$RUN_DIR/$n.pid" && say "$n" "running on :${PORT[$n]}" || say "$n" "stopped"; } ;;
  esac
done
exit 0
