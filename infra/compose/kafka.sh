#!/usr/bin/env bash
# Entry point of the compose `kafka*` services (apache/kafka image, or infra/docker's build of the
# same jars): one combined KRaft controller+broker of a 1- or 3-node cluster, whose clients
# authenticate with SASL/SCRAM-SHA-512 and are authorized by ACLs. The controller listener uses
# SASL/PLAIN (KRaft controllers cannot use SCRAM) with a user of its own, so no unauthenticated
# connection reaches either listener. Passwords come from the mounted secrets; the volume is
# formatted once, with every principal's SCRAM credentials (KIP-900).
# `kafka.sh health`: the healthcheck (this start of the server finished and its port accepts).
set -euo pipefail
SECRETS=/run/secrets
CONF=/tmp/antrean
DATA=/var/lib/kafka/data
NODE_ID="${KAFKA_NODE_ID:-1}"
HOST="${KAFKA_ADVERTISED_HOST:-kafka}"
VOTERS="${KAFKA_CONTROLLER_QUORUM_VOTERS:-1@kafka:9093}"
EXTERNAL_PORT="${KAFKA_EXTERNAL_PORT:-29092}"
# Internal topics (offsets, transactions) as replicated as the app's topics, capped at the
# cluster's size.
NODES="$(tr ',' '\n' <<< "$VOTERS" | grep -c @)"
RF="${KAFKA_REPLICATION_FACTOR:-1}"
((RF > NODES)) && RF="$NODES"
MIN_ISR="${KAFKA_MIN_INSYNC_REPLICAS:-1}"
((MIN_ISR > RF)) && MIN_ISR="$RF"

if [[ "${1:-}" == health ]]; then
  grep -q "Kafka Server started" "$CONF/server.log" && (exec 3<> /dev/tcp/127.0.0.1/9092)
  exit
fi

secret() { tr -d '\r\n' < "$SECRETS/$1"; }
ADMIN="$(secret kafka_admin_password)"
CONTROLLER="$(secret kafka_controller_password)"
declare -A USERS=([admin]="$ADMIN" [cancel-api]="$(secret kafka_api_password)"
  [bpjs-sync-worker]="$(secret kafka_worker_password)" [notifier]="$(secret kafka_notifier_password)")

umask 077
mkdir -p "$CONF"
scram='org.apache.kafka.common.security.scram.ScramLoginModule required'
plain='org.apache.kafka.common.security.plain.PlainLoginModule required'
cat > "$CONF/server.properties" <<PROPS
process.roles=broker,controller
node.id=${NODE_ID}
controller.quorum.voters=${VOTERS}
listeners=CLIENT://:9092,EXTERNAL://:29092,CONTROLLER://:9093
advertised.listeners=CLIENT://${HOST}:9092,EXTERNAL://localhost:${EXTERNAL_PORT}
controller.listener.names=CONTROLLER
inter.broker.listener.name=CLIENT
listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,EXTERNAL:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.external.sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.client.scram-sha-512.sasl.jaas.config=${scram} username="admin" password="${ADMIN}";
listener.name.external.scram-sha-512.sasl.jaas.config=${scram};
listener.name.controller.sasl.enabled.mechanisms=PLAIN
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.plain.sasl.jaas.config=${plain} username="controller" password="${CONTROLLER}" user_controller="${CONTROLLER}";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:controller
auto.create.topics.enable=false
log.dirs=${DATA}
num.partitions=${KAFKA_TOPIC_PARTITIONS:-4}
default.replication.factor=${RF}
min.insync.replicas=${MIN_ISR}
offsets.topic.replication.factor=${RF}
transaction.state.log.replication.factor=${RF}
transaction.state.log.min.isr=${MIN_ISR}
share.coordinator.state.topic.replication.factor=${RF}
share.coordinator.state.topic.min.isr=${MIN_ISR}
group.initial.rebalance.delay.ms=0
log.retention.hours=168
PROPS

if [[ ! -f "$DATA/meta.properties" ]]; then
  # Through a java @argfile, so no password shows on a process command line.
  args="$CONF/format.args"
  {
    printf '%s\n' kafka.tools.StorageTool format -t "$CLUSTER_ID" -c "$CONF/server.properties"
    for user in "${!USERS[@]}"; do
      printf '%s\n' -S "\"SCRAM-SHA-512=[name=${user},password=${USERS[$user]}]\""
    done
  } > "$args"
  java -cp '/opt/kafka/libs/*' "@$args" > /dev/null
  rm -f "$args"
fi
rm -f "$CONF/server.log"
exec java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC -Djava.awt.headless=true \
  -Dlog4j2.configurationFile=/opt/antrean/log4j2.properties \
  -cp '/opt/kafka/libs/*' kafka.Kafka "$CONF/server.properties"
