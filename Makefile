# Two commands do everything on a fresh machine: `make up` and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
STAMP := .venv/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: up down status test test-deploy lint fmt bench bench-quick bench-tools venv kafka-jars

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv .venv
	@.venv/bin/pip install -q --upgrade pip
	@# py-lzstring replaced lzstring, whose package has the same import name: not both
	@.venv/bin/pip uninstall -q -y lzstring future 2> /dev/null || true
	@.venv/bin/pip install -q -e '.[dev]'
	@rm -f .venv/.installed-* && touch $(STAMP)

venv: $(STAMP)

kafka-jars:
	@bash infra/kafka/kafka.sh fetch

# KAFKA_NODES=3: a 3-node Kafka cluster (docs/DEPLOY.md); `make down` stops any node count.
KAFKA_NODES ?= 1
up: venv kafka-jars
	@KAFKA_NODES=$(KAFKA_NODES) bash infra/up.sh

down:
	@bash infra/down.sh

status:
	@bash infra/postgres/pg.sh status; bash infra/kafka/kafka.sh status; bash infra/services.sh status

# pytest exit code 5 ("no tests ran") counts as a failure.
test: venv kafka-jars
	@bash infra/browser.sh ensure
	@bash infra/prometheus.sh ensure
	@APP_ENV=test $(PY) -m pytest --ignore=tests/deploy $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests ran"; exit 1; fi; exit $$rc

# The compose stack in real containers and the 3-broker Kafka cluster (tests/deploy), in a
# private Docker Engine that the target starts and stops (infra/docker/).
test-deploy: venv kafka-jars
	@bash infra/docker/test-deploy.sh $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests ran"; exit 1; fi; exit $$rc

lint: venv
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .
	@.venv/bin/mypy shared services

fmt: venv
	@.venv/bin/ruff format . && .venv/bin/ruff check --fix .

bench: venv kafka-jars bench-tools
	@APP_ENV=test $(PY) -m bench.run $(BENCH_ARGS)

bench-quick: venv kafka-jars bench-tools
	@APP_ENV=test $(PY) -m bench.run --quick

bench-tools:
	@bash bench/tools.sh
