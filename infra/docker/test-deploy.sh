#!/usr/bin/env bash
# `make test-deploy`: the private Docker Engine started, the images built, the deploy tests
# (tests/deploy: the compose stack in containers, the 3-broker Kafka cluster) run, and the engine
# stopped again whatever happened. Arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
ENGINE="$REPO/infra/docker/engine.sh"
trap 'bash "$ENGINE" stop' EXIT
# The native 3-broker test (tests/deploy/test_kafka_cluster.py) starts its own cluster, but the
# test fixtures it shares with `make test` need the native PostgreSQL and broker.
bash "$REPO/infra/postgres/pg.sh" start
bash "$REPO/infra/kafka/kafka.sh" start
bash "$ENGINE" start
eval "$(bash "$ENGINE" vars)"
# (Not `tee /dev/stderr`: reopening the caller's log file through it would truncate that log.)
bash "$REPO/infra/docker/images.sh" > "$LOG_DIR/images.out"
cat "$LOG_DIR/images.out"
images="$(grep -E '^[A-Z_]+=' "$LOG_DIR/images.out")"
set -a
eval "$images"
set +a
cd "$REPO"
APP_ENV=test "$PY" -m pytest tests/deploy -p no:cacheprovider "$@"
