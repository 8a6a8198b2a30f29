"""In production every service refuses bad settings with one line naming the variable and exit
code 78; a good production configuration starts, and the API keeps /metrics, /docs and
/openapi.json off its public port (metrics are on OPS_PORT)."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from shared.bpjs import DEV_CREDENTIALS
from shared.config import API_DB_ROLE, DEV_JWT_SECRET, EXIT_CONFIG, WORKER_DB_ROLE
from tests.fixtures.api import api_env
from tests.fixtures.infra import REPO, free_port, role_dsn, wait_until

pytestmark = pytest.mark.integration

GOOD_SECRET = "a-production-hs256-key-of-more-than-32-bytes"
GOOD_DSN = "postgresql://antrean_api:Pr0d-db-passw0rd@127.0.0.1:5432/antrean"
GOOD_BPJS = {
    "BPJS_BASE_URL": "https://apijkn.bpjs-kesehatan.go.id/antreanrs",
    "BPJS_CONS_ID": "31337",
    "BPJS_SECRET_KEY": "real-looking-consumer-secret",
    "BPJS_USER_KEY": "real-looking-user-key",
}
# Everything a developer's shell might carry into a service is dropped first.
_SETTINGS_PREFIXES = ("APP_ENV", "DATABASE_URL", "AUTH_", "KAFKA_", "BPJS_", "OPS_", "API_DOCS")


def _clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_SETTINGS_PREFIXES)}


def run_service(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Start `python -m module` with only `env` as its settings; it must exit on its own."""
    return subprocess.run(
        [sys.executable, "-m", module],
        cwd=REPO,
        env={**_clean_environ(), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_refused(proc: subprocess.CompletedProcess[str], service: str, *needles: str) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == EXIT_CONFIG, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{service}: refusing to start: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


API_OK = {"APP_ENV": "production", "DATABASE_URL": GOOD_DSN, "AUTH_JWT_SECRET": GOOD_SECRET}
API_CASES = {
    "secret_missing": ({"AUTH_JWT_SECRET": ""}, "AUTH_JWT_SECRET is missing"),
    "secret_placeholder": ({"AUTH_JWT_SECRET": "change-me"}, "AUTH_JWT_SECRET is a placeholder"),
    "dev_secret": ({"AUTH_JWT_SECRET": DEV_JWT_SECRET}, "AUTH_JWT_SECRET is a dev value"),
    "short_secret": ({"AUTH_JWT_SECRET": "x" * 31}, "AUTH_JWT_SECRET is shorter than 32 bytes"),
    "jwks_without_issuer_audience": (
        {"AUTH_JWKS_URL": "https://idp.example.org/certs"},
        "AUTH_JWKS_URL is set without AUTH_ISSUER and AUTH_AUDIENCE",
    ),
    "jwks_without_audience": (
        {"AUTH_JWKS_URL": "https://idp.example.org/certs", "AUTH_ISSUER": "https://idp"},
        "AUTH_JWKS_URL is set without AUTH_AUDIENCE",
    ),
    "database_url_missing": ({"DATABASE_URL": ""}, "DATABASE_URL is missing"),
    "database_url_without_password": (
        {"DATABASE_URL": "postgresql://antrean_api@db:5432/antrean"},
        "DATABASE_URL has no password",
    ),
    "database_url_placeholder_password": (
        {"DATABASE_URL": "postgresql://antrean:change-me@postgres:5432/antrean"},
        "DATABASE_URL has a placeholder password",
    ),
    "database_url_dev_password": (
        {"DATABASE_URL": "postgresql://antrean:antrean@127.0.0.1:5432/antrean"},
        "DATABASE_URL has a dev password",
    ),
    "database_url_dev_role_password": (
        {"DATABASE_URL": role_dsn("postgresql://a:b@127.0.0.1:5432/antrean", API_DB_ROLE)},
        "DATABASE_URL has a dev password",
    ),
    "kafka_sasl_without_password": (
        {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "antrean-api"},
        "KAFKA_SASL_PASSWORD is missing",
    ),
    "kafka_sasl_placeholder_password": (
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_USERNAME": "antrean-api",
            "KAFKA_SASL_PASSWORD": "change-me",
        },
        "KAFKA_SASL_PASSWORD is a placeholder",
    ),
    "app_env_mistyped": ({"APP_ENV": "prod"}, "APP_ENV: Input should be"),
}


@pytest.mark.parametrize("case", sorted(API_CASES))
def test_cancel_api_refuses_a_bad_production_setting_with_one_line(case):
    env, message = API_CASES[case]
    proc = run_service("services.cancel_api", {**API_OK, **env})
    assert_refused(proc, "cancel-api", message)
    settings = {**API_OK, **env}
    for secret in ("AUTH_JWT_SECRET", "DATABASE_URL", "KAFKA_SASL_PASSWORD"):
        if settings.get(secret):  # a refused secret is named, never printed
            assert settings[secret] not in proc.stderr


def test_settings_default_to_production_so_an_unset_app_env_refuses_dev_secrets():
    proc = run_service("services.cancel_api", {})
    assert_refused(proc, "cancel-api", "DATABASE_URL is missing", "AUTH_JWT_SECRET is missing")


def test_notifier_refuses_a_placeholder_secret_and_an_incomplete_jwks_setting():
    proc = run_service(
        "services.notifier", {"APP_ENV": "production", "AUTH_JWT_SECRET": "change-me"}
    )
    assert_refused(proc, "notifier", "AUTH_JWT_SECRET is a placeholder")
    proc = run_service(
        "services.notifier", {"APP_ENV": "production", "AUTH_JWKS_URL": "https://idp/certs"}
    )
    assert_refused(proc, "notifier", "AUTH_JWKS_URL is set without AUTH_ISSUER and AUTH_AUDIENCE")


def test_simulator_refuses_production_which_is_also_the_default():
    for env in ({}, {"APP_ENV": "production"}):
        assert_refused(run_service("services.bpjs_simulator", env), "bpjs-simulator", "APP_ENV")


WORKER_OK = {"APP_ENV": "production", "DATABASE_URL": GOOD_DSN, **GOOD_BPJS}


def _credentials_file(tmp_path: Path, content: object) -> str:
    path = tmp_path / "bpjs-credentials.json"
    path.write_text(json.dumps(content))
    return str(path)


WORKER_CASES = {
    "bpjs_over_http": (
        {"BPJS_BASE_URL": "http://apijkn.bpjs-kesehatan.go.id/antreanrs"},
        "BPJS_BASE_URL is not https",
    ),
    "bpjs_url_missing": ({"BPJS_BASE_URL": ""}, "BPJS_BASE_URL is missing"),
    "bpjs_secret_placeholder": (
        {"BPJS_SECRET_KEY": "change-me"},
        "BPJS_SECRET_KEY is a placeholder",
    ),
    "bpjs_dev_user_key": (
        {"BPJS_USER_KEY": DEV_CREDENTIALS.user_key.get_secret_value()},
        "BPJS_USER_KEY is a dev value",
    ),
    "bpjs_keys_missing": ({"BPJS_SECRET_KEY": ""}, "BPJS_SECRET_KEY is missing"),
    "database_dev_password": (
        {"DATABASE_URL": "postgresql://antrean:antrean@127.0.0.1/antrean"},
        "DATABASE_URL has a dev password",
    ),
}


@pytest.mark.parametrize("case", sorted(WORKER_CASES))
def test_worker_refuses_a_bad_production_setting_with_one_line(case):
    env, message = WORKER_CASES[case]
    proc = run_service("services.bpjs_sync_worker", {**WORKER_OK, **env})
    assert_refused(proc, "bpjs-sync-worker", message)


def test_worker_refuses_an_unreadable_or_incomplete_credentials_file_naming_no_value(tmp_path):
    missing = str(tmp_path / "nowhere.json")
    proc = run_service("services.bpjs_sync_worker", {**WORKER_OK, "BPJS_CREDENTIALS_FILE": missing})
    assert_refused(proc, "bpjs-sync-worker", "BPJS_CREDENTIALS_FILE")
    incomplete = _credentials_file(
        tmp_path, {"KLINIK-B": {"cons_id": "4242", "secret_key": "very-secret-b-value"}}
    )
    proc = run_service(
        "services.bpjs_sync_worker", {**WORKER_OK, "BPJS_CREDENTIALS_FILE": incomplete}
    )
    assert_refused(proc, "bpjs-sync-worker", "BPJS_CREDENTIALS_FILE", "KLINIK-B")
    assert "very-secret-b-value" not in proc.stderr
    placeholder = _credentials_file(
        tmp_path, {"KLINIK-C": {"cons_id": "4343", "secret_key": "change-me", "user_key": "uk-c-1"}}
    )
    proc = run_service(
        "services.bpjs_sync_worker", {**WORKER_OK, "BPJS_CREDENTIALS_FILE": placeholder}
    )
    assert_refused(proc, "bpjs-sync-worker", "BPJS_CREDENTIALS_FILE", "KLINIK-C", "secret_key")


# Leases that cannot outlast two BPJS calls plus the rate-limit wait: a second worker could
# claim a job whose calls are still running and send its cancellation again.
SHORT_LEASES = {
    "call_limit": {
        "SYNC_LEASE_S": "11",  # < 2 * (1 + 5) + 1/100
        "BPJS_CONNECT_TIMEOUT_S": "1",
        "BPJS_READ_TIMEOUT_S": "5",
        "SYNC_MAX_IN_FLIGHT": "1",
        "SYNC_RATE_PER_S": "100",
    },
    "rate_wait": {"SYNC_MAX_IN_FLIGHT": "32", "SYNC_RATE_PER_S": "0.5"},  # default lease 60 s
}


@pytest.mark.parametrize("app_env", ["production", "test"])
@pytest.mark.parametrize("case", sorted(SHORT_LEASES))
def test_worker_refuses_a_lease_shorter_than_two_calls_and_the_rate_wait(case, app_env):
    base = WORKER_OK if app_env == "production" else {"APP_ENV": "test"}
    proc = run_service("services.bpjs_sync_worker", {**base, **SHORT_LEASES[case]})
    assert_refused(proc, "bpjs-sync-worker", "SYNC_LEASE_S")


@pytest.fixture
async def production_login(infra, database) -> AsyncIterator[tuple[str, str]]:
    """A login of the API's and one of the worker's role with production-strength passwords
    (the fixed test passwords are refused in production); dropped afterwards."""
    admin = await asyncpg.connect(infra.admin_dsn)
    tag = uuid.uuid4().hex[:8]
    made: list[str] = []
    dsns = []
    try:
        for member_of in (API_DB_ROLE, WORKER_DB_ROLE):
            login, password = f"t_prod_{member_of}_{tag}", secrets.token_urlsafe(24)
            await admin.execute(
                f"create role {login} login password '{password}' in role {member_of}"
            )
            made.append(login)
            dsns.append(role_dsn(database, login, password))
        yield dsns[0], dsns[1]
    finally:
        for login in made:
            await admin.execute(f"drop role if exists {login}")
        await admin.close()


async def test_good_production_api_serves_no_metrics_docs_or_openapi_on_its_public_port(
    spawn, database, infra, topic_prefix, production_login
):
    api_dsn, _ = production_login
    port, ops = free_port(), free_port()
    env = {
        **api_env(database, infra.kafka_for("api"), topic_prefix),
        "APP_ENV": "production",
        "DATABASE_URL": api_dsn,
        "AUTH_JWT_SECRET": GOOD_SECRET,
        "CANCEL_API_PORT": str(port),
        "OPS_PORT": str(ops),
    }
    spawn("services.cancel_api", env, f"http://127.0.0.1:{port}/healthz")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        for path in ("/metrics", "/docs", "/openapi.json", "/redoc"):
            assert (await c.get(path)).status_code == 404, path
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/readyz")).json()["checks"]["database"] is True
        assert (await c.get("/antrian_ruangan")).status_code == 401
    metrics = httpx.get(f"http://127.0.0.1:{ops}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert "outbox_published_total" in metrics.text


async def test_production_api_with_two_workers_serves_metrics_once_on_the_ops_port(
    spawn, database, infra, topic_prefix, production_login
):
    api_dsn, _ = production_login
    port, ops = free_port(), free_port()
    env = {
        **api_env(database, infra.kafka_for("api"), topic_prefix),
        "APP_ENV": "production",
        "DATABASE_URL": api_dsn,
        "AUTH_JWT_SECRET": GOOD_SECRET,
        "CANCEL_API_PORT": str(port),
        "OPS_PORT": str(ops),
        "CANCEL_API_WORKERS": "2",
    }
    spawn("services.cancel_api", env, f"http://127.0.0.1:{port}/healthz")

    def worker_pids() -> set[str]:
        text = httpx.get(f"http://127.0.0.1:{ops}/metrics", timeout=10).text
        return set(re.findall(r'outbox_unpublished_rows\{pid="(\d+)"\}', text))

    # Both uvicorn workers' relays report through the one ops port.
    await wait_until(lambda: len(worker_pids()) == 2, timeout=30, what="both workers' metrics")
    assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code == 404
    # Their garbage collectors' pauses too, summed over the workers (a histogram per process).
    text = httpx.get(f"http://127.0.0.1:{ops}/metrics", timeout=10).text
    assert re.search(r'python_gc_pause_seconds_count\{generation="0"\} [1-9]', text), text[-2000:]


async def test_good_production_worker_starts_with_its_own_role(
    spawn, database, infra, topic_prefix, production_login
):
    _, worker_dsn = production_login
    port = free_port()
    env = {
        **api_env(database, infra.kafka_for("worker"), topic_prefix),
        **GOOD_BPJS,
        "APP_ENV": "production",
        "AUTH_JWT_SECRET": "",  # the worker verifies no tokens and needs no token secret
        "DATABASE_URL": worker_dsn,
        "WORKER_PORT": str(port),
        "WORKER_CONSUMER_GROUP": f"{topic_prefix}worker",
    }
    proc = spawn("services.bpjs_sync_worker", env, f"http://127.0.0.1:{port}/healthz", timeout=90)
    assert proc.proc.poll() is None
