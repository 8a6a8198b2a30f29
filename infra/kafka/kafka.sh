#!/usr/bin/env bash
# KRaft Apache Kafka from Maven Central jars: fetch | start | stop | status. KAFKA_NODES=1 (the
# default): one broker in $DATA_DIR/kafka; KAFKA_NODES=N: N combined controller+broker nodes
# (ids 1..N, a static N-voter quorum) in $DATA_DIR/kafka/node-<id>, ports from infra/lib.sh.
# Clients authenticate with SASL/SCRAM-SHA-512 and are authorized by ACLs (StandardAuthorizer);
# the per-data-dir passwords live in $DATA_DIR/kafka/credentials.env (mode 0600).
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"
KDATA="$DATA_DIR/kafka"
PIDF="$RUN_DIR/kafka.pid"
# Internal topics are replicated like the deployment's topics: 3 copies, 2 in sync, from 3 nodes.
RF=$((KAFKA_NODES < 3 ? KAFKA_NODES : 3))
MIN_ISR=$((RF >= 3 ? 2 : 1))

node_dir() { if ((KAFKA_NODES == 1)); then echo "$KDATA"; else echo "$KDATA/node-$1"; fi; }
node_pidf() { if ((KAFKA_NODES == 1)); then echo "$PIDF"; else echo "$RUN_DIR/kafka-$1.pid"; fi; }
node_log() { if ((KAFKA_NODES == 1)); then echo "$LOG_DIR/kafka.log"; else echo "$LOG_DIR/kafka-$1.log"; fi; }
# Every pid file of this data dir, whatever KAFKA_NODES was when it started.
all_pidfs() { compgen -G "$RUN_DIR/kafka.pid" || true; compgen -G "$RUN_DIR/kafka-[0-9]*.pid" || true; }
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

write_config() { # node id
  local dir voters="" i
  dir="$(node_dir "$1")"
  for ((i = 1; i <= KAFKA_NODES; i++)); do voters+="${voters:+,}$i@127.0.0.1:$(kafka_controller_port "$i")"; done
  mkdir -p "$dir"
  # shellcheck disable=SC1090
  source "$KAFKA_CREDENTIALS"
  (umask 077; sed -e "s|@LOG_DIRS@|$dir/log|" -e "s|@PORT@|$(kafka_port "$1")|g" \
      -e "s|@CPORT@|$(kafka_controller_port "$1")|g" -e "s|@ADMIN_PASSWORD@|$KAFKA_ADMIN_PASSWORD|" \
      -e "s|@CONTROLLER_PASSWORD@|$KAFKA_CONTROLLER_PASSWORD|g" -e "s|@NODE_ID@|$1|" \
      -e "s|@VOTERS@|$voters|" -e "s|@RF@|$RF|g" -e "s|@MIN_ISR@|$MIN_ISR|g" \
      "$REPO/infra/kafka/server.properties.in" > "$dir/server.properties")
  chmod 600 "$dir/server.properties"
}

# The nodes of one cluster share its id: a formatted node's, else a new one.
cluster_id() {
  local meta
  if ((KAFKA_NODES > 1)); then
    for meta in "$KDATA"/node-*/log/meta.properties; do
      [[ -f "$meta" ]] && { sed -n 's/^cluster.id=//p' "$meta"; return 0; }
    done
  fi
  # base64url of 16 random bytes, as Kafka's own ids; never one starting with '-', which the
  # storage tool would read as an option (`-t -Xy...`: "expected one argument").
  local id
  while id="$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"; [[ "$id" == -* ]]; do
    :
  done
  echo "$id"
}

# SCRAM users exist from the start (KIP-900): the broker itself logs in as admin. The arguments
# go through a java @argfile so no password appears on a process command line.
format() { # node id, cluster id
  local p dir args
  dir="$(node_dir "$1")"; args="$dir/format.args"
  (
    umask 077
    printf '%s\n' kafka.tools.StorageTool format -t "$2" -c "$dir/server.properties"
    for p in "${PRINCIPALS[@]}"; do
      local u="KAFKA_${p^^}_USERNAME" pw="KAFKA_${p^^}_PASSWORD"
      printf '%s\n' -S "\"SCRAM-SHA-512=[name=${!u},password=${!pw}]\""
    done
  ) > "$args"
  "${jvm[@]}" "-Dkafka.logs.dir=$LOG_DIR" -cp "$LIBS/*" "@$args" >> "$LOG_DIR/kafka-format.log" 2>&1 || { rm -f "$args"; return 1; }
  rm -f "$args"
}

# A cluster cannot start beside this data dir's single broker (it holds node 1's ports). One
# broker asked for while a cluster runs finds node 1 running, as the tests do.
single_broker_running() { ((KAFKA_NODES > 1)) && node_alive "$PIDF"; }

bootstrap() {
  local i list=""
  for ((i = 1; i <= KAFKA_NODES; i++)); do list+="${list:+,}127.0.0.1:$(kafka_port "$i")"; done
  echo "$list"
}

# A SIGKILLed node may linger as a zombie until its parent (init here) reaps it.
node_alive() { pid_alive "$1" && [[ "$(ps -o stat= -p "$(cat "$1")" 2>/dev/null)" != Z* ]]; }

any_alive() { local p; for p; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }

start() {
  fetch
  if pid_alive "$PIDF" && [[ ! -f "$KAFKA_CREDENTIALS" ]]; then
    say kafka "running broker predates SASL/ACLs: restarting it"; stop
  fi
  if single_broker_running; then
    say kafka "a single broker runs from $DATA_DIR: stop it first (make down)" >&2
    return 1
  fi
  ensure_credentials
  jvm=(java "-Xmx$KAFKA_HEAP" "-Xms128m" -XX:+UseG1GC
    "-Dlog4j2.configurationFile=$REPO/infra/kafka/log4j2.properties")
  local i cid="" started=()
  for ((i = 1; i <= KAFKA_NODES; i++)); do
    if node_alive "$(node_pidf "$i")" || port_open "$(kafka_port "$i")"; then continue; fi
    write_config "$i"
    if [[ ! -f "$(node_dir "$i")/log/meta.properties" ]]; then
      cid="${cid:-$(cluster_id)}"; format "$i" "$cid"
    fi
    local logs="$LOG_DIR"
    ((KAFKA_NODES == 1)) || { logs="$LOG_DIR/kafka-node-$i"; mkdir -p "$logs"; }
    say kafka "starting $( ((KAFKA_NODES == 1)) && echo broker || echo "node $i") (log: $(node_log "$i"))"
    setsid nohup "${jvm[@]}" "-Dkafka.logs.dir=$logs" -cp "$LIBS/*" kafka.Kafka \
      "$(node_dir "$i")/server.properties" >> "$(node_log "$i")" 2>&1 < /dev/null &
    echo $! > "$(node_pidf "$i")"
    started+=("$i")
  done
  if ((${#started[@]} == 0)); then
    say kafka "already running on $(bootstrap)"; return 0
  fi
  # Every node is launched before any is waited for: a node opens its client port only once
  # the controller quorum (a majority of the nodes) has formed.
  for i in "${started[@]}"; do wait_port "$(kafka_port "$i")" 90 kafka; done
  (KAFKA_SASL_GIVEN="" && kafka_principal_env admin &&
    "$PY" "$REPO/infra/wait_kafka.py" "$(bootstrap)" 90 "$KAFKA_NODES")
  say kafka "ready on $(bootstrap) (SASL/SCRAM; credentials in $KAFKA_CREDENTIALS)"
}

# Every node of the data dir (whatever KAFKA_NODES is), all at once: a node stopped alone
# would wait for a controller the next one takes away.
stop() {
  local f pids=()
  for f in $(all_pidfs); do
    if pid_alive "$f"; then pids+=("$(cat "$f")"); kill "$(cat "$f")"; fi
    rm -f "$f"
  done
  ((${#pids[@]} == 0)) && return 0
  for _ in $(seq 1 300); do any_alive "${pids[@]}" || break; sleep 0.1; done
  kill -9 "${pids[@]}" 2>/dev/null || true
  say kafka "stopped"
}

status() {
  local i up=0
  for ((i = 1; i <= KAFKA_NODES; i++)); do
    if port_open "$(kafka_port "$i")"; then
      up=$((up + 1)); ((KAFKA_NODES == 1)) || say kafka "node $i running on 127.0.0.1:$(kafka_port "$i")"
    else
      ((KAFKA_NODES == 1)) || say kafka "node $i not running"
    fi
  done
  if ((KAFKA_NODES == 1)); then
    if ((up)); then say kafka "running on 127.0.0.1:$KAFKA_PORT"; else say kafka "not running"; return 1; fi
  fi
  ((up > 0))
}

"${1:-status}"
