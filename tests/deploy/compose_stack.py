"""The production compose stack (docker-compose.yml) in a real Docker Engine, for the deploy tests.

`make test-deploy` starts a private engine and builds the images (infra/docker/), then passes
APP_IMAGE, POSTGRES_IMAGE and KAFKA_IMAGE. Without them (a laptop with Docker Desktop) compose
builds the app image and pulls the pinned upstream images. Settings and secrets live in a
temporary folder, never in the checkout; every port is published on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from testcontainers.compose import DockerCompose

from shared.auth import issue_dev_token
from tests.fixtures.infra import free_port

REPO = Path(__file__).resolve().parents[2]
PROJECT = "antrean-deploytest"
CLINIC = "KLINIK-DEPLOY"
ROOM = "POLI-UMUM"
BROKERS = ("kafka", "kafka-2", "kafka-3")
IMAGE_VARIABLES = ("APP_IMAGE", "POSTGRES_IMAGE", "KAFKA_IMAGE", "PYTHON_IMAGE")


def docker_answers() -> bool:
    try:
        return (
            subprocess.run(["docker", "version"], capture_output=True, timeout=20).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class ComposeStack:
    folder: Path
    compose: DockerCompose
    ports: dict[str, int]
    jwt_secret: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['CANCEL_API_HOST_PORT']}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ports['NOTIFIER_HOST_PORTS']}/ws"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['BPJS_SIM_HOST_PORT']}/_sim"

    def token(self, user: str, perms: list[str], name: str = "Staf") -> str:
        return issue_dev_token(
            self.jwt_secret, user_id=user, name=name, clinic_id=CLINIC, permissions=perms
        )

    def compose_cmd(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        cmd = [*self.compose.compose_command_property, *args]
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)

    def kill(self, service: str) -> None:
        """SIGKILL, as a crash or an OOM kill: no drain, no clean shutdown."""
        done = self.compose_cmd("kill", "-s", "SIGKILL", service)
        assert done.returncode == 0, done.stderr

    def start(self, service: str) -> None:
        done = self.compose_cmd("start", service)
        assert done.returncode == 0, done.stderr

    def wait_healthy(self, service: str, timeout: float = 180) -> None:
        """Until the service's healthcheck passes (`up --wait` for one running service)."""
        done = self.compose_cmd(
            "up", "--wait", "--no-recreate", "--wait-timeout", str(int(timeout)), service,
            timeout=timeout + 30,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr + self.logs(service)

    def logs(self, *services: str) -> str:
        return self.compose_cmd("logs", "--no-color", "--tail", "200", *services).stdout

    def sql(self, query: str) -> str:
        """A query through psql in the postgres container (its local socket), as the owner."""
        done = self.compose_cmd(
            "exec", "-T", "postgres", "psql", "-U", "antrean", "-d", "antrean",
            "-At", "-c", query,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def sim(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, f"{self.sim_url}{path}", timeout=10.0, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()


def _write_env(folder: Path, ports: dict[str, int]) -> dict[str, str]:
    values = {
        "COMPOSE_PROJECT_NAME": PROJECT,
        "COMPOSE_PROFILES": "postgres,kafka3,dev",
        "HOST_ENV_FILE": str(folder / ".env"),
        "HOST_SECRETS_DIR": str(folder / "secrets"),
        "APP_ENV": "dev",
        "LOG_LEVEL": "INFO",
        "POSTGRES_USER": "antrean",
        "POSTGRES_DB": "antrean",
        "POSTGRES_HOST": "postgres",
        "POSTGRES_PORT": "5432",
        "POSTGRES_MAX_CONNECTIONS": "100",
        "DB_POOL_MAX": "8",
        "SYNC_MAX_IN_FLIGHT": "8",
        "KAFKA_CLUSTER_ID": "dGVzdC1kZXBsb3ktY2x1cw",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093",
        "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092,kafka-2:9092,kafka-3:9092",
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_TOPIC_PARTITIONS": "4",
        "KAFKA_REPLICATION_FACTOR": "3",
        "KAFKA_MIN_INSYNC_REPLICAS": "2",
        "KAFKA_HEAP_OPTS": "-Xms128m -Xmx384m",
        "BPJS_SERVICE": "antreanrs",
        "BPJS_BASE_URL": "http://bpjs-simulator:8090/antreanrs_dev",
        "BPJS_CONS_ID": "deploytest",
        "BPJS_SIM_DEV_AUTOCREATE": "false",
        # A killed worker's attempts are taken back when it restarts (same hostname); these
        # only bound the cases it does not come back from.
        "SYNC_ORPHAN_AFTER_S": "30",
        "NOTIFIER_PUBLIC_URL": f"ws://127.0.0.1:{ports['NOTIFIER_HOST_PORTS']}/ws",
        "PUBLISH_ADDRESS": "127.0.0.1",
        **{k: str(v) for k, v in ports.items()},
    }
    values.update({k: os.environ[k] for k in IMAGE_VARIABLES if os.environ.get(k)})
    (folder / ".env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return values


def _write_secrets(folder: Path) -> str:
    target = folder / "secrets"
    target.mkdir(mode=0o700)
    # Real values for what init-secrets.sh leaves as placeholders (the BPJS keys).
    for name in ("bpjs_secret_key", "bpjs_user_key"):
        (target / name).write_text(secrets.token_hex(16))
    (target / "bpjs-credentials.json").write_text("{}")
    subprocess.run(
        ["bash", str(REPO / "infra/compose/init-secrets.sh")],
        env={**os.environ, "HOST_SECRETS_DIR": str(target)},
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    for path in target.iterdir():
        path.chmod(0o644)
    return (target / "auth_jwt_secret").read_text().strip()


@pytest.fixture(scope="module")
def compose_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    if not docker_answers():
        pytest.fail("no Docker Engine answers (DOCKER_HOST): run `make test-deploy`")
    folder = tmp_path_factory.mktemp("compose")
    ports = {
        name: free_port()
        for name in (
            "CANCEL_API_HOST_PORT", "NOTIFIER_HOST_PORTS", "WORKER_HOST_PORTS",
            "POSTGRES_HOST_PORT", "KAFKA_HOST_PORT", "KAFKA_2_HOST_PORT", "KAFKA_3_HOST_PORT",
            "BPJS_SIM_HOST_PORT", "PROMETHEUS_HOST_PORT", "GRAFANA_HOST_PORT",
        )
    }  # fmt: skip
    values = _write_env(folder, ports)
    # Compose lets the caller's environment win over --env-file: the native stack's
    # KAFKA_BOOTSTRAP_SERVERS or DATABASE_URL (infra/lib.sh exports them) must not leak in.
    shadowed = {k: os.environ.pop(k) for k in [*values, "DATABASE_URL"] if k in os.environ}
    jwt_secret = _write_secrets(folder)
    prebuilt = "APP_IMAGE" in values
    compose = DockerCompose(
        REPO,
        compose_file_name="docker-compose.yml",
        env_file=str(folder / ".env"),
        build=not prebuilt,
        wait=True,
    )
    stack = ComposeStack(folder, compose, ports, jwt_secret)
    try:
        compose.start()
    except Exception:
        print(stack.logs())
        compose.stop()
        os.environ.update(shadowed)
        raise
    try:
        yield stack
    finally:
        compose.stop()  # down --volumes: containers, network and volumes
        os.environ.update(shadowed)
