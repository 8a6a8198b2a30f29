#!/usr/bin/env bash
# `make up`: PostgreSQL, Kafka, migrations, demo data and every service, natively. Idempotent.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# The native stack is the dev stack (settings default to production, which refuses dev secrets).
export APP_ENV=dev
# Three or more Kafka nodes: every topic has 3 copies and a write needs 2 of them in sync.
if ((KAFKA_NODES >= 3)); then
  export KAFKA_REPLICATION_FACTOR="${KAFKA_REPLICATION_FACTOR:-3}"
  export KAFKA_MIN_INSYNC_REPLICAS="${KAFKA_MIN_INSYNC_REPLICAS:-2}"
fi
bash "$REPO/infra/postgres/pg.sh" start
bash "$REPO/infra/kafka/kafka.sh" start
(cd "$REPO" && "$PY" -m shared.migrate)
(cd "$REPO" && kafka_principal_env admin && "$PY" -m shared.topics)  # topics and ACLs
bash "$REPO/infra/services.sh" start
if [[ -f "$REPO/services/cancel_api/demo.py" ]]; then (cd "$REPO" && "$PY" -m services.cancel_api.demo); fi
echo
say up "PostgreSQL 127.0.0.1:$PG_PORT | Kafka $KAFKA_BOOTSTRAP_SERVERS | logs in $LOG_DIR | stop with: make down"
if [[ -f "$KAFKA_CREDENTIALS" ]]; then
  say up "Kafka principals (SASL/SCRAM-SHA-512) and passwords: $KAFKA_CREDENTIALS (docs/SECURITY.md)"
fi
