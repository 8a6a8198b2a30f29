#!/usr/bin/env bash
# Single-node KRaft Apache Kafka broker from Maven Central jars: fetch | start | stop | status.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
LIBS="$CACHE_DIR/kafka-$KAFKA_VERSION/libs"
KDATA="$DATA_DIR/kafka"
PIDF="$RUN_DIR/kafka.pid"

fetch() {
  if [[ -f "$LIBS/.complete" ]]; then return 0; fi
  say kafka "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $LIBS"
  mvn -q -B -f "$REPO/infra/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIBS"
  touch "$LIBS/.complete"
}

write_config() {
  mkdir -p "$KDATA"
  sed -e "s|@LOG_DIRS@|$KDATA/log|" -e "s|@PORT@|$KAFKA_PORT|g" \
      -e "s|@CPORT@|$KAFKA_CONTROLLER_PORT|g" \
      "$REPO/infra/kafka/server.properties.in" > "$KDATA/server.properties"
}

start() {
  fetch
  if pid_alive "$PIDF" || port_open "$KAFKA_PORT"; then
    say kafka "already running on 127.0.0.1:$KAFKA_PORT"; return 0
  fi
  write_config
  local cp="$LIBS/*" jvm=(java "-Xmx$KAFKA_HEAP" "-Xms128m" -XX:+UseG1GC
    "-Dlog4j2.configurationFile=$REPO/infra/kafka/log4j2.properties"
    "-Dkafka.logs.dir=$LOG_DIR")
  if [[ ! -f "$KDATA/log/meta.properties" ]]; then
    local cid; cid="$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
    "${jvm[@]}" -cp "$cp" kafka.tools.StorageTool format -t "$cid" \
      -c "$KDATA/server.properties" >> "$LOG_DIR/kafka-format.log" 2>&1
  fi
  say kafka "starting broker (log: $LOG_DIR/kafka.log)"
  setsid nohup "${jvm[@]}" -cp "$cp" kafka.Kafka "$KDATA/server.properties" \
    >> "$LOG_DIR/kafka.log" 2>&1 < /dev/null &
  echo $! > "$PIDF"
  wait_port "$KAFKA_PORT" 90 kafka
  "$PY" "$REPO/infra/wait_kafka.py" "127.0.0.1:$KAFKA_PORT" 90
  say kafka "ready on 127.0.0.1:$KAFKA_PORT"
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
