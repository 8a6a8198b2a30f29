"""The published OpenAPI document tells the truth: schemathesis, with every check and its stateful
phase, against the cancel API as a real process (real PostgreSQL and Kafka, real tokens)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.cancel_api.access import bearer
from shared.auth import STAFF_PERMISSIONS
from tests.fixtures.api import api_env, token
from tests.fixtures.infra import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
# Bounded so the run stays around a minute on two cores; the seed makes a failure reproducible.
MAX_EXAMPLES = 30
MAX_TIME_S = 90
SEED = 15


def test_the_api_answers_as_its_openapi_document_says(
    spawn, database, infra, topic_prefix, tmp_path
):
    port = free_port()
    env = api_env(database, infra.kafka_for("api"), topic_prefix, CANCEL_API_PORT=str(port))
    spawn("services.cancel_api", env, f"http://127.0.0.1:{port}/healthz")
    # Every permission for the clinic: the fuzzer may register, read, cancel, accept and
    # administer the BPJS sync (the stateful phase links these operations).
    tok = token(perms=list(STAFF_PERMISSIONS))
    # The token goes to the document's security scheme (not a blanket header), so the fuzzer can
    # also leave it out and expect 401.
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'[auth.openapi.{bearer.scheme_name}]\nbearer = "${{FUZZ_TOKEN}}"\n')
    run = subprocess.run(
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(config),
            "run",
            f"http://127.0.0.1:{port}/openapi.json",
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--max-time",
            str(MAX_TIME_S),
            "--seed",
            str(SEED),
            # One worker: with two, Hypothesis' lambda reflection has crashed inside CPython 3.11's
            # ast.parse ("AST constructor recursion depth mismatch").
            "--workers",
            "1",
            "--output-sanitize",
            "true",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks",
            "FUZZ_TOKEN": tok,
        },
        cwd=tmp_path,  # its cache (.schemathesis/) stays out of the repository
        capture_output=True,
        text=True,
        timeout=MAX_TIME_S + 120,
    )
    print(run.stdout[-20000:], run.stderr[-4000:])
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-4000:]
