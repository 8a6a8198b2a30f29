#!/usr/bin/env bash
# Single-node KRaft Apache Kafka broker from Maven Central jars: fetch | start | stop | status.
# Clients authenticate with SASL/SCRAM-SHA-512 and are authorized by ACLs (StandardAuthorizer);
# the per-data-dir passwords live in $DATA_DIR/kafka/credentials.env (mode 0600).
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"
KDATA="$DATA_DIR/kafka"
PIDF="$RUN_DIR/kafka.pid"
PRINCIPALS=(admin api worker notifier)
declare -A USERNAME=([admin]=admin [api]=cancel-api [worker]=bpjs-sync-worker [notifier]=notifier)

fetch() {
  if [[ -f "$LIBS/.complete" ]]; then return 0; fi
  say kafka "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $LIBS"
  mvn -q -B -f "$REPO/infra/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIBS"
  touch "$LIBS/.complete"
}

secret() { head -c24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# A data dir without credentials was formatted by an older script (no SCRAM users, no ACLs):
# its metadata cannot be given users offline, so it is formatted again (topics are dropped;
# `make up` recreates them, and the outbox in PostgreSQL is the source of truth).
ensure_credentials() {
  [[ -f "$KAFKA_CREDENTIALS" ]] && return 0
  if [[ -d "$KDATA/log" ]]; then
    say kafka "data dir $KDATA predates SASL/ACLs: formatting it again (its topics are dropped)"
    rm -rf "$KDATA/log"
  fi
  mkdir -p "$KDATA"
  local p tmp="$KAFKA_CREDENTIALS.tmp"
  (
    umask 077
    for p in "${PRINCIPALS[@]}"; do
      printf 'KAFKA_%s_USERNAME=%s\nKAFKA_%s_PASSWORD=%s\n' "${p^^}" "${USERNAME[$p]}" "${p^^}" "$(secret)"
    done
    printf 'KAFKA_CONTROLLER_PASSWORD=%s\n' "$(secret)"
  ) > "$tmp"
  chmod 600 "$tmp" && mv "$tmp" "$KAFKA_CREDENTIALS"
}

write_config() {
  mkdir -p "$KDATA"
  # shellcheck disable=SC1090
  source "$KAFKA_CREDENTIALS"
  (umask 077; sed -e "s|@LOG_DIRS@|$KDATA/log|" -e "s|@PORT@|$KAFKA_PORT|g" \
      -e "s|@CPORT@|$KAFKA_CONTROLLER_PORT|g" -e "s|@ADMIN_PASSWORD@|$KAFKA_ADMIN_PASSWORD|" \
      -e "s|@CONTROLLER_PASSWORD@|$KAFKA_CONTROLLER_PASSWORD|g" \
      "$REPO/infra/kafka/server.properties.in" > "$KDATA/server.properties")
  chmod 600 "$KDATA/server.properties"
}

# SCRAM users exist from the start (KIP-900): the broker itself logs in as admin. The arguments
# go through a java @argfile so no password appears on a process command line.
format() {
  local cid p args="$KDATA/format.args"
  cid="$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
  (
    umask 077
    printf '%s\n' kafka.tools.StorageTool format -t "$cid" -c "$KDATA/server.properties"
    for p in "${PRINCIPALS[@]}"; do
      local u="KAFKA_${p^^}_USERNAME" pw="KAFKA_${p^^}_PASSWORD"
      printf '%s\n' -S "\"SCRAM-SHA-512=[name=${!u},password=${!pw}]\""
    done
  ) > "$args"
  "${jvm[@]}" -cp "$LIBS/*" "@$args" >> "$LOG_DIR/kafka-format.log" 2>&1 || { rm -f "$args"; return 1; }
  rm -f "$args"
}

start() {
  fetch
  if pid_alive "$PIDF" && [[ ! -f "$KAFKA_CREDENTIALS" ]]; then
    say kafka "running broker predates SASL/ACLs: restarting it"; stop
  fi
  if pid_alive "$PIDF" || port_open "$KAFKA_PORT"; then
    say kafka "already running on 127.0.0.1:$KAFKA_PORT"; return 0
  fi
  ensure_credentials
  write_config
  jvm=(java "-Xmx$KAFKA_HEAP" "-Xms128m" -XX:+UseG1GC
    "-Dlog4j2.configurationFile=$REPO/infra/kafka/log4j2.properties"
    "-Dkafka.logs.dir=$LOG_DIR")
  if [[ ! -f "$KDATA/log/meta.properties" ]]; then format; fi
  say kafka "starting broker (log: $LOG_DIR/kafka.log)"
  setsid nohup "${jvm[@]}" -cp "$LIBS/*" kafka.Kafka "$KDATA/server.properties" \
    >> "$LOG_DIR/kafka.log" 2>&1 < /dev/null &
  echo $! > "$PIDF"
  wait_port "$KAFKA_PORT" 90 kafka
  (KAFKA_SASL_GIVEN="" && kafka_principal_env admin && "$PY" "$REPO/infra/wait_kafka.py" "127.0.0.1:$KAFKA_PORT" 90)
  say kafka "ready on 127.0.0.1:$KAFKA_PORT (SASL/SCRAM; credentials in $KAFKA_CREDENTIALS)"
}

stop() {
  if pid_alive "$PIDF"; then
    local pid; pid="$(cat "$PIDF")"; kill "$pid"
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    say kafka "stopped"
  fi
  rm -f "$PIDF"
}

status() {
  if port_open "$KAFKA_PORT"; then say kafka "running on 127.0.0.1:$KAFKA_PORT"; else say kafka "not running"; return 1; fi
}

"${1:-status}"
