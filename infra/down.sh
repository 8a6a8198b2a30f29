#!/usr/bin/env bash
# `make down`: stop every service, Kafka and PostgreSQL; data stays in .data/.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bash "$REPO/infra/services.sh" stop notifier bpjs_sync_worker cancel_api bpjs_simulator
bash "$REPO/infra/kafka/kafka.sh" stop
bash "$REPO/infra/postgres/pg.sh" stop
