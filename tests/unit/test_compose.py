"""The container deployment (Dockerfile, docker-compose.yml, .env.example) matches the contract.

No Docker engine runs here: the files are parsed and checked statically.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
KAFKA_POM = ROOT / "infra" / "kafka" / "pom.xml"
CONTRACT = ROOT.parent / "shared" / "spec" / "CONTRACT.md"

# CONTRACT.md §1: the app processes that run from the project image, with module and port.
APP_SERVICES = {
    "cancel-api": ("services.cancel_api", 8000),
    "notifier": ("services.notifier", 8001),
    "bpjs-sync-worker": ("services.bpjs_sync_worker", 6066),
}
SIMULATOR = "bpjs-simulator"
SIMULATOR_MODULE, SIMULATOR_PORT = "services.bpjs_simulator", 8090
INFRA_SERVICES = ("kafka", "postgres")

# CONTRACT.md §2 (also read from the contract itself when it is next to the repository).
CONTRACT_ENV_VARS = {
    "DATABASE_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "AUTH_JWT_SECRET",
    "AUTH_JWKS_URL",
    "AUTH_AUDIENCE",
    "AUTH_ISSUER",
    "BPJS_SERVICE",
    "BPJS_BASE_URL",
    "BPJS_CONS_ID",
    "BPJS_SECRET_KEY",
    "BPJS_USER_KEY",
    "NOTIFIER_PUBLIC_URL",
}
SECRET_ENV_VARS = {"AUTH_JWT_SECRET", "BPJS_SECRET_KEY", "BPJS_USER_KEY", "POSTGRES_PASSWORD"}
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|_KEY$")
WHOLE_REFERENCE = re.compile(r"^\$\{[A-Z][A-Z0-9_]*(?:(?::?[-?+])[^}]*)?\}$")
DSN_USERINFO = re.compile(
    r"^postgres(?:ql)?://(?:\$\{[^}]*\}|[^:@/]*)(?::(?P<password>\$\{[^}]*\}|[^@]*))?@"
)
ASSIGNMENT = re.compile(r"^\s*(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def env_example_entries() -> dict[str, tuple[str, bool]]:
    """Every VAR=value line of .env.example, active or commented out: {name: (value, active)}."""
    entries: dict[str, tuple[str, bool]] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = ASSIGNMENT.match(line)
        if match:
            name, value, active = match.group(2), match.group(3).strip(), match.group(1) is None
            if active or name not in entries:  # an active line wins over a commented example
                entries[name] = (value, active)
    return entries


def contract_env_vars() -> set[str]:
    names = set(CONTRACT_ENV_VARS)
    if CONTRACT.exists():
        text = CONTRACT.read_text()
        section = text.split("## 2.", 1)[1].split("\n## ", 1)[0]
        for row in section.splitlines():
            if row.startswith("| `"):
                names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1]))
    return names


def test_every_containerised_process_of_the_contract_is_a_compose_service(services):
    expected = {*APP_SERVICES, SIMULATOR, *INFRA_SERVICES}
    assert expected <= set(services), f"missing: {sorted(expected - set(services))}"
    for name, (module, _port) in {**APP_SERVICES, SIMULATOR: (SIMULATOR_MODULE, 0)}.items():
        assert command_of(services[name]) == ["python", "-m", module], name
        assert services[name].get("build") == ".", f"{name} must run the image built from ."


def test_migrations_run_as_a_one_shot_job_after_postgres_is_healthy(services):
    migrate = services["migrate"]
    assert command_of(migrate) == ["python", "-m", "shared.migrate"]
    assert migrate.get("build") == "."
    assert str(migrate.get("restart")) == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_every_long_running_service_has_a_healthcheck(services):
    for name, service in services.items():
        if str(service.get("restart")) == "no":
            continue  # a one-shot job (migrate) is done when it exits
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable"), name
        assert check.get("test") and check["test"] not in (["NONE"], "NONE"), name


@pytest.mark.parametrize(
    ("name", "port"),
    [(name, port) for name, (_, port) in APP_SERVICES.items()] + [(SIMULATOR, SIMULATOR_PORT)],
)
def test_app_healthchecks_probe_healthz_with_python_and_the_port_is_published(services, name, port):
    service = services[name]
    test = service["healthcheck"]["test"]
    probe = " ".join(test) if isinstance(test, list) else test
    assert "python" in probe and "urllib.request" in probe, "the slim image has no curl"
    assert f"http://127.0.0.1:{port}/healthz" in probe
    published = [str(p) for p in service.get("ports", [])]
    assert any(p.endswith(f":{port}") or p == str(port) for p in published), published


def test_app_services_wait_for_healthy_kafka_and_postgres_and_finished_migrations(services):
    for name in APP_SERVICES:
        depends_on = services[name]["depends_on"]
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        assert depends_on["kafka"]["condition"] == "service_healthy", name
        assert depends_on["postgres"]["condition"] == "service_healthy", name
        assert depends_on["migrate"]["condition"] == "service_completed_successfully", name
        assert services[name]["restart"] == "unless-stopped", name


def test_app_services_reach_kafka_and_postgres_by_compose_hostname_and_listen_on_all_interfaces(
    services,
):
    for name in [*APP_SERVICES, "migrate"]:
        env = environment_of(services[name])
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092", name
        assert "@postgres:5432/" in env["DATABASE_URL"], name
        assert ".env" in str(services[name].get("env_file")), f"{name} takes .env via env_file"
    for name in APP_SERVICES:
        assert environment_of(services[name])["HTTP_HOST"] == "0.0.0.0", name
    assert environment_of(services[SIMULATOR])["BPJS_SIM_HOST"] == "0.0.0.0"


def test_simulator_starts_only_in_the_dev_profile(services):
    assert services[SIMULATOR].get("profiles") == ["dev"]
    for name, service in services.items():
        if name == SIMULATOR:
            continue
        assert not service.get("profiles"), f"{name} must start without a profile"
        assert SIMULATOR not in (service.get("depends_on") or {}), name


def test_kafka_image_tag_equals_the_version_pinned_in_the_pom(services):
    pinned = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", KAFKA_POM.read_text())
    assert pinned, "infra/kafka/pom.xml pins no <kafka.version>"
    assert services["kafka"]["image"] == f"apache/kafka:{pinned.group(1)}"


def test_kafka_is_a_single_node_kraft_broker_with_a_named_volume_and_api_healthcheck(
    compose, services
):
    kafka = services["kafka"]
    env = environment_of(kafka)
    for key in (
        "KAFKA_NODE_ID",
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_CONTROLLER_LISTENER_NAMES",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
        "KAFKA_INTER_BROKER_LISTENER_NAME",
    ):
        assert env.get(key), f"kafka lacks {key}"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    factors = [k for k in env if k.endswith("REPLICATION_FACTOR") or k.endswith("MIN_ISR")]
    assert "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR" in factors
    assert "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR" in factors
    assert all(env[k] == "1" for k in factors), {k: env[k] for k in factors}
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert_named_volume(compose, kafka, env["KAFKA_LOG_DIRS"])
    probe = " ".join(kafka["healthcheck"]["test"])
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server localhost:9092" in probe


def test_postgres_takes_its_password_from_env_and_keeps_data_on_a_named_volume(compose, services):
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:15"
    env = environment_of(postgres)
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= set(env)
    assert re.fullmatch(r"\$\{POSTGRES_PASSWORD:\?[^}]+\}", env["POSTGRES_PASSWORD"])
    assert_named_volume(compose, postgres, "/var/lib/postgresql/data")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def assert_named_volume(compose: dict[str, Any], service: dict[str, Any], target: str) -> None:
    named = set(compose.get("volumes") or {})
    mounts = [str(v).split(":") for v in service.get("volumes", [])]
    assert any(m[0] in named and m[1] == target for m in mounts), (mounts, named)


def test_compose_holds_no_literal_secret_values(services):
    text = COMPOSE.read_text()
    assert "change-me" not in text
    assert "dev-only-jwt-secret" not in text
    for name, service in services.items():
        env = environment_of(service)
        for key, value in env.items():
            if key in SECRET_ENV_VARS or SECRET_NAME.search(key):
                assert WHOLE_REFERENCE.match(value), f"{name}.{key} must be a ${{...}} reference"
        if "DATABASE_URL" in env:
            dsn = DSN_USERINFO.match(env["DATABASE_URL"])
            assert dsn, f"{name}.DATABASE_URL is not a postgresql:// DSN"
            password = dsn.group("password")
            assert not password or WHOLE_REFERENCE.match(password), f"{name}.DATABASE_URL"
    for secret in SECRET_ENV_VARS - {"POSTGRES_PASSWORD"}:
        assert not re.search(rf"^\s*-?\s*{secret}\s*[:=]\s*[^$\s]", text, re.M), secret


def test_every_variable_compose_interpolates_is_documented_in_env_example():
    documented = set(env_example_entries())
    lines = [line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#")]
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", "\n".join(lines)))
    assert used <= documented, f"undocumented: {sorted(used - documented)}"


def test_env_example_lists_every_contract_variable_with_a_comment():
    entries = env_example_entries()
    missing = contract_env_vars() - set(entries)
    assert not missing, f".env.example lacks {sorted(missing)}"
    lines = ENV_EXAMPLE.read_text().splitlines()
    for index, line in enumerate(lines):
        match = ASSIGNMENT.match(line)
        if match and match.group(1) is None:
            previous = next((p for p in reversed(lines[:index]) if p.strip()), "")
            assert previous.lstrip().startswith("#"), f"{match.group(2)} has no comment"


def test_env_example_defaults_to_production_with_placeholder_secrets():
    entries = env_example_entries()
    assert entries["APP_ENV"] == ("production", True)
    for secret in SECRET_ENV_VARS:
        value, active = entries[secret]
        assert active and value == "change-me", secret


def test_dockerfile_builds_in_stages_from_slim_python_and_runs_the_project_as_non_root():
    text = DOCKERFILE.read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(bases) >= 2, "multi-stage: a builder stage and the final stage"
    assert all(base == "python:3.11-slim" for base in bases), bases
    final = text.split(re.findall(r"^FROM .*$", text, re.M)[-1], 1)[1]
    assert re.search(r"COPY --from=builder|from=builder", final), "final stage uses the wheels"
    users = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert "10001" in users[-1] or re.search(r"--uid 10001", final)
    assert re.search(r"pip install --no-cache-dir[^\n]*\s\.\s*(?:&&|\\|$)", final, re.M)
    assert "WORKDIR /app" in final
    for source in ("pyproject.toml", "services/", "shared/", "migrations/"):
        assert re.search(rf"^COPY\s+{re.escape(source)}", final, re.M), source
    assert re.search(r"^ENV\s+PYTHONUNBUFFERED=1", final, re.M)
    assert 'CMD ["python", "-m", "services.cancel_api"]' in final


def test_dockerignore_keeps_local_state_tests_and_secrets_out_of_the_image():
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    expected = {".venv", ".data", ".cache", "tests", "bench", ".git", "node_modules"}
    assert expected <= ignored, sorted(expected - ignored)
    assert "__pycache__" in ignored or "**/__pycache__" in ignored
    assert ".env" in ignored
