#!/usr/bin/env bash
# Entry point of the compose `kafka` service (apache/kafka image): a single-node KRaft broker
# whose clients authenticate with SASL/SCRAM-SHA-512 and are authorized by ACLs. The controller
# listener uses SASL/PLAIN (KRaft controllers cannot use SCRAM) with a user of its own, so no
# unauthenticated connection reaches either listener. Passwords come from the mounted secrets;
# the volume is formatted once, with every principal's SCRAM credentials (KIP-900).
set -euo pipefail
SECRETS=/run/secrets
CONF=/tmp/antrean
DATA=/var/lib/kafka/data
EXTERNAL_PORT="${KAFKA_EXTERNAL_PORT:-29092}"

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
node.id=1
controller.quorum.voters=1@localhost:9093
listeners=CLIENT://:9092,EXTERNAL://:29092,CONTROLLER://localhost:9093
advertised.listeners=CLIENT://kafka:9092,EXTERNAL://localhost:${EXTERNAL_PORT}
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
num.partitions=4
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
PROPS

# What the healthcheck's kafka-broker-api-versions.sh logs in with.
cat > "$CONF/admin.properties" <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=${scram} username="admin" password="${ADMIN}";
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
  /opt/kafka/bin/kafka-run-class.sh "@$args"
  rm -f "$args"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$CONF/server.properties"
