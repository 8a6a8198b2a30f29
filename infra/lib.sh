# Shared settings for the native (no-Docker) dev stack; sourced by the other infra scripts.
# Every value can be overridden from the environment (docs/CONFIGURATION.md).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${ANTREAN_DATA_DIR:-$REPO/.data}"
LOG_DIR="$DATA_DIR/logs"
RUN_DIR="$DATA_DIR/run"
CACHE_DIR="${ANTREAN_CACHE_DIR:-$REPO/.cache}"
VENV="$REPO/.venv"
PY="$VENV/bin/python"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$REPO/infra/kafka/pom.xml")"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
# Native Kafka nodes (combined controller+broker); node i listens on KAFKA_PORT + 2(i-1) and
# KAFKA_CONTROLLER_PORT + 2(i-1).
KAFKA_NODES="${KAFKA_NODES:-1}"
if ((KAFKA_NODES > 1)); then KAFKA_HEAP="${KAFKA_HEAP:-384m}"; else KAFKA_HEAP="${KAFKA_HEAP:-512m}"; fi
kafka_port() { echo $((KAFKA_PORT + 2 * ($1 - 1))); }
kafka_controller_port() { echo $((KAFKA_CONTROLLER_PORT + 2 * ($1 - 1))); }
PG_PORT="${PG_PORT:-5432}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
export DATABASE_URL="${DATABASE_URL:-postgresql://antrean:antrean@127.0.0.1:$PG_PORT/antrean}"
_bootstrap="127.0.0.1:$KAFKA_PORT"
for ((_i = 2; _i <= KAFKA_NODES; _i++)); do _bootstrap+=",127.0.0.1:$(kafka_port "$_i")"; done
export KAFKA_BOOTSTRAP_SERVERS="${KAFKA_BOOTSTRAP_SERVERS:-$_bootstrap}"
# Kafka principals' passwords, written by infra/kafka/kafka.sh when it formats the data dir.
KAFKA_CREDENTIALS="$DATA_DIR/kafka/credentials.env"
KAFKA_SASL_GIVEN="${KAFKA_SASL_USERNAME:-}"
mkdir -p "$LOG_DIR" "$RUN_DIR"

say() { printf '\033[1m[%s]\033[0m %s\n' "$1" "$2"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds name
  local i
  for ((i = 0; i < $2 * 10; i++)); do port_open "$1" && return 0; sleep 0.1; done
  say "$3" "did not open port $1 within $2 s" >&2; return 1
}

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Export the Kafka client settings of one principal (admin|api|worker|notifier) of the native
# broker; does nothing when the caller gave KAFKA_SASL_USERNAME (another broker) or the native
# broker has no credentials yet.
kafka_principal_env() {
  [[ -n "$KAFKA_SASL_GIVEN" || ! -f "$KAFKA_CREDENTIALS" ]] && return 0
  local user pass
  user="$(sed -n "s/^KAFKA_${1^^}_USERNAME=//p" "$KAFKA_CREDENTIALS")"
  pass="$(sed -n "s/^KAFKA_${1^^}_PASSWORD=//p" "$KAFKA_CREDENTIALS")"
  export KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT KAFKA_SASL_MECHANISM=SCRAM-SHA-512
  export KAFKA_SASL_USERNAME="$user" KAFKA_SASL_PASSWORD="$pass"
}
