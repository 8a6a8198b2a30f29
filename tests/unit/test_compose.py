"""The container deployment (Dockerfile, docker-compose.yml, .env.example, the compose secrets)
matches what the services need. The files are parsed and checked statically here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.bpjs_sync_worker.config import WorkerSettings
from services.cancel_api.config import CancelApiSettings
from services.notifier.config import NotifierSettings
from tests.unit.test_alert_rules import promtool

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
KAFKA_POM = ROOT / "infra" / "kafka" / "pom.xml"
KAFKA_SCRIPT = ROOT / "infra" / "compose" / "kafka.sh"
INIT_SECRETS = ROOT / "infra" / "compose" / "init-secrets.sh"
PROMETHEUS_CONFIG = ROOT / "ops" / "prometheus" / "prometheus.yml"

# The app processes that run from the project image, with module and port.
APP_SERVICES = {
    "cancel-api": ("services.cancel_api", 8000),
    "notifier": ("services.notifier", 8001),
    "bpjs-sync-worker": ("services.bpjs_sync_worker", 6066),
}
SIMULATOR = "bpjs-simulator"
SIMULATOR_MODULE, SIMULATOR_PORT = "services.bpjs_simulator", 8090
INFRA_SERVICES = ("kafka", "kafka-2", "kafka-3", "postgres")
BROKERS = ("kafka", "kafka-2", "kafka-3")
# Where Prometheus finds each app service's /metrics: the ops port, or the worker's one port.
METRICS_PORTS = {
    "cancel-api": CancelApiSettings.model_fields["ops_port"].default,
    "notifier": NotifierSettings.model_fields["ops_port"].default,
    "bpjs-sync-worker": WorkerSettings.model_fields["port"].default,
}
OPS_PROFILE = ("prometheus", "grafana")
ONE_SHOT = {"migrate": "shared.migrate", "topics": "shared.topics"}

# The public configuration of the services (docs/SECURITY.md, README): .env.example names each.
CONTRACT_ENV_VARS = {
    "APP_ENV",
    "DATABASE_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "AUTH_JWT_SECRET",
    "AUTH_JWKS_URL",
    "AUTH_AUDIENCE",
    "AUTH_ISSUER",
    "AUTH_JWKS_REFRESH_S",
    "AUTH_JWKS_MIN_REFETCH_S",
    "AUTH_LEEWAY_S",
    "BPJS_SERVICE",
    "BPJS_BASE_URL",
    "BPJS_CONS_ID",
    "BPJS_SECRET_KEY",
    "BPJS_USER_KEY",
    "BPJS_CREDENTIALS_FILE",
    "NOTIFIER_PUBLIC_URL",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SSL_CAFILE",
    "KAFKA_SSL_CERTFILE",
    "KAFKA_SSL_KEYFILE",
}
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|_KEY$|DATABASE_URL")
# Each container gets exactly the secrets it uses, as /run/secrets/<target>.
KAFKA_SECRETS = {
    "kafka_admin_password",
    "kafka_controller_password",
    "kafka_api_password",
    "kafka_worker_password",
    "kafka_notifier_password",
}
SECRETS_OF = {
    **dict.fromkeys(BROKERS, KAFKA_SECRETS),
    "postgres": {"postgres_password"},
    "migrate": {"DATABASE_URL", "API_DATABASE_PASSWORD", "WORKER_DATABASE_PASSWORD"},
    "topics": {"KAFKA_SASL_PASSWORD"},
    "cancel-api": {"DATABASE_URL", "AUTH_JWT_SECRET", "KAFKA_SASL_PASSWORD"},
    "notifier": {"AUTH_JWT_SECRET", "KAFKA_SASL_PASSWORD"},
    "bpjs-sync-worker": {
        "DATABASE_URL",
        "KAFKA_SASL_PASSWORD",
        "BPJS_SECRET_KEY",
        "BPJS_USER_KEY",
        "bpjs-credentials.json",
    },
    SIMULATOR: {"BPJS_SECRET_KEY", "BPJS_USER_KEY"},
    "grafana": {"grafana_admin_password"},
}
ASSIGNMENT = re.compile(r"^\s*(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def default_of(value: str) -> str:
    """`${VAR:-default}` -> default (what compose uses when .env leaves VAR unset)."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def secret_targets(service: dict[str, Any]) -> dict[str, str]:
    """target name in /run/secrets -> source secret, of one service."""
    out: dict[str, str] = {}
    for item in service.get("secrets") or []:
        if isinstance(item, str):
            out[item] = item
        else:
            out[item.get("target", item["source"])] = item["source"]
    return out


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


def test_every_containerised_process_is_a_compose_service(services):
    expected = {*APP_SERVICES, SIMULATOR, *INFRA_SERVICES, *ONE_SHOT}
    assert expected <= set(services), f"missing: {sorted(expected - set(services))}"
    for name, (module, _port) in {**APP_SERVICES, SIMULATOR: (SIMULATOR_MODULE, 0)}.items():
        assert command_of(services[name]) == ["python", "-m", module], name
        assert services[name]["build"]["context"] == ".", f"{name} must run the image built from ."


def test_migrations_and_topics_run_as_one_shot_jobs_after_their_backend_is_healthy(services):
    for name, module in ONE_SHOT.items():
        job = services[name]
        assert command_of(job) == ["python", "-m", module]
        assert job["build"]["context"] == "."
        assert str(job.get("restart")) == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for broker in BROKERS:
        assert services["topics"]["depends_on"][broker]["condition"] == "service_healthy"


def test_every_long_running_service_has_a_healthcheck(services):
    for name, service in services.items():
        if str(service.get("restart")) == "no":
            continue  # a one-shot job (migrate, topics) is done when it exits
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable"), name
        assert check.get("test") and check["test"] not in (["NONE"], "NONE"), name


@pytest.mark.parametrize(
    ("name", "port"),
    [(name, port) for name, (_, port) in APP_SERVICES.items()] + [(SIMULATOR, SIMULATOR_PORT)],
)
def test_app_healthchecks_probe_readiness_with_python_and_the_port_is_published(
    services, name, port
):
    service = services[name]
    test = service["healthcheck"]["test"]
    probe = " ".join(test) if isinstance(test, list) else test
    assert "python" in probe and "urllib.request" in probe, "the slim image has no curl"
    # Readiness (the database reachable, the consumer running), not just a live process; the
    # simulator has no dependencies, so its liveness is its readiness.
    path = "healthz" if name == SIMULATOR else "readyz"
    assert f"http://127.0.0.1:{port}/{path}" in probe
    published = [str(p) for p in service.get("ports", [])]
    assert any(p.endswith(f":{port}") for p in published), published


def test_every_published_port_is_bound_to_loopback_by_default(services):
    loopback = re.compile(
        r"^(127\.0\.0\.1|\$\{PUBLISH_ADDRESS:-127\.0\.0\.1\}):(\$\{[A-Z0-9_]+:-[\d-]+\}|[\d-]+):\d+$"
    )
    for name, service in services.items():
        for port in service.get("ports", []):
            assert loopback.match(str(port)), f"{name}: {port} is not bound to 127.0.0.1"
    entries = env_example_entries()
    assert entries["PUBLISH_ADDRESS"] == ("127.0.0.1", True)


def test_app_services_wait_for_healthy_backends_migrations_and_topics(services):
    for name in APP_SERVICES:
        depends_on = services[name]["depends_on"]
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        # Waited for when their profile runs them; with an external backend they are skipped.
        for backend in ("kafka", "postgres"):
            assert depends_on[backend]["condition"] == "service_healthy", name
            assert depends_on[backend]["required"] is False, name
        for job in ONE_SHOT:
            assert depends_on[job]["condition"] == "service_completed_successfully", name
        assert services[name]["restart"] == "unless-stopped", name


def test_app_services_authenticate_to_kafka_each_as_its_own_principal(services):
    users = {}
    for name in [*APP_SERVICES, "topics"]:
        env = environment_of(services[name])
        assert default_of(env["KAFKA_BOOTSTRAP_SERVERS"]) == "kafka:9092", name
        assert default_of(env["KAFKA_SECURITY_PROTOCOL"]) == "SASL_PLAINTEXT", name
        assert default_of(env["PGHOST"]) == "postgres", name
        assert env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512", name
        users[name] = env["KAFKA_SASL_USERNAME"]
    assert len(set(users.values())) == len(users), users
    assert users["topics"] == "admin"
    for name in APP_SERVICES:
        assert environment_of(services[name])["HTTP_HOST"] == "0.0.0.0", name
    assert environment_of(services[SIMULATOR])["BPJS_SIM_HOST"] == "0.0.0.0"


def test_each_container_receives_only_the_secrets_it_uses(compose, services):
    declared = compose["secrets"]
    for name, expected in SECRETS_OF.items():
        targets = secret_targets(services[name])
        assert set(targets) == expected, name
        assert set(targets.values()) <= set(declared), name
    for name, service in services.items():
        if name not in SECRETS_OF:
            assert not service.get("secrets"), name
        for key, value in environment_of(service).items():
            if SECRET_NAME.search(key) and not key.endswith("_FILE"):
                pytest.fail(f"{name}.{key}={value!r}: secrets come from files, not environment")
    text = COMPOSE.read_text()
    assert "change-me" not in text
    assert "dev-only-jwt-secret" not in text


def test_postgres_reads_its_password_from_a_secret_and_keeps_data_on_a_named_volume(
    compose, services
):
    postgres = services["postgres"]
    image = re.fullmatch(r"\$\{POSTGRES_IMAGE:-(postgres:15\.\d+-bookworm)\}", postgres["image"])
    assert image, postgres["image"]
    assert env_example_entries()["POSTGRES_IMAGE"] == (image.group(1), True)
    env = environment_of(postgres)
    assert env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "POSTGRES_PASSWORD" not in env
    assert_named_volume(compose, postgres, "/var/lib/postgresql/data")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_the_bpjs_credentials_file_is_mounted_as_a_secret_where_the_worker_reads_it(services):
    worker = services["bpjs-sync-worker"]
    assert secret_targets(worker)["bpjs-credentials.json"] == "bpjs_credentials"
    documented = re.search(r"^# BPJS_CREDENTIALS_FILE=(\S+)$", ENV_EXAMPLE.read_text(), re.M)
    assert documented and documented.group(1) == "/run/secrets/bpjs-credentials.json"


def test_the_default_deployment_signs_with_the_default_bpjs_credentials(services, monkeypatch):
    # init-secrets.sh writes `{}` as the per-clinic file; were the worker pointed at it by
    # default, every clinic would be refused with no_credentials. Only .env turns it on.
    value = environment_of(services["bpjs-sync-worker"])["BPJS_CREDENTIALS_FILE"]
    assert value == "${BPJS_CREDENTIALS_FILE:-}"
    monkeypatch.setenv("BPJS_CREDENTIALS_FILE", "")
    assert WorkerSettings().bpjs_credentials_file is None


def grace_s(service: dict[str, Any]) -> int:
    return int(re.fullmatch(r"(\d+)s", service["stop_grace_period"]).group(1))


def test_the_worker_may_drain_its_longest_attempt_before_it_is_killed(services):
    # An attempt is up to three BPJS calls (batal, task 99, the getlisttask read-back); each is
    # bounded by the client's connect + read + write (5 s) + pool (5 s) timeouts.
    s = WorkerSettings.model_construct()
    per_call = s.bpjs_connect_timeout_s + s.bpjs_read_timeout_s + 5 + 5
    assert grace_s(services["bpjs-sync-worker"]) > 3 * per_call, per_call
    # uvicorn's own graceful shutdown of open requests, then the relay's last round.
    assert grace_s(services["cancel-api"]) > 10
    for name in (*BROKERS, "postgres"):
        assert grace_s(services[name]) >= 30, name


def test_each_worker_replica_is_named_after_its_container_not_a_shared_setting(services):
    # One WORKER_ID for every replica would let each starting replica free the others' leases.
    assert environment_of(services["bpjs-sync-worker"])["WORKER_ID"] == ""
    assert "WORKER_ID" not in env_example_entries()


def test_postgres_allows_the_connections_of_the_default_budget(services):
    # docs/DEPLOY.md, PostgreSQL connections: every pool at its most, migrate, operators and
    # PostgreSQL's own reserve.
    entries = env_example_entries()
    command = " ".join(command_of(services["postgres"]))
    assert "max_connections=${POSTGRES_MAX_CONNECTIONS:-" in command
    pool = int(entries["DB_POOL_MAX"][0])
    in_flight = int(entries["SYNC_MAX_IN_FLIGHT"][0])
    assert pool == CancelApiSettings.model_fields["db_pool_max"].default
    assert in_flight == WorkerSettings.model_fields["max_in_flight"].default
    needed = pool + (in_flight + 4 + 1) + 1 + 5 + 3
    assert int(entries["POSTGRES_MAX_CONNECTIONS"][0]) >= needed


def test_kafka_image_tag_equals_the_version_pinned_in_the_pom(services):
    pinned = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", KAFKA_POM.read_text())
    assert pinned, "infra/kafka/pom.xml pins no <kafka.version>"
    for broker in BROKERS:
        assert services[broker]["image"] == f"${{KAFKA_IMAGE:-apache/kafka:{pinned.group(1)}}}"
    assert env_example_entries()["KAFKA_IMAGE"] == (f"apache/kafka:{pinned.group(1)}", True)


def test_three_brokers_form_one_quorum_with_their_own_ids_names_volumes_and_ports(services):
    ids, hosts, volumes, ports = set(), set(), set(), set()
    for broker in BROKERS:
        env = environment_of(services[broker])
        ids.add(env["KAFKA_NODE_ID"])
        hosts.add(env["KAFKA_ADVERTISED_HOST"])
        volumes.add(str(services[broker]["volumes"][0]).split(":")[0])
        ports.add(str(services[broker]["ports"][0]))
        assert (
            env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
            == "${KAFKA_CONTROLLER_QUORUM_VOTERS:-1@kafka:9093}"
        )
    assert ids == {"1", "2", "3"} and hosts == set(BROKERS)
    assert len(volumes) == 3 and len(ports) == 3
    assert services["kafka"]["profiles"] == ["kafka", "kafka3"]
    assert services["kafka-2"]["profiles"] == services["kafka-3"]["profiles"] == ["kafka3"]
    voters = re.search(
        r"KAFKA_CONTROLLER_QUORUM_VOTERS=(1@kafka:9093,\S+)", ENV_EXAMPLE.read_text()
    )
    assert voters and voters.group(1) == "1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093"


def test_kafka_accepts_only_authenticated_clients_and_enforces_acls(compose, services):
    for broker in BROKERS:
        kafka = services[broker]
        assert kafka["entrypoint"] == ["bash", "/opt/antrean/kafka.sh"]
        mounts = [str(v) for v in kafka.get("volumes", [])]
        assert "./infra/compose/kafka.sh:/opt/antrean/kafka.sh:ro" in mounts
        assert_named_volume(compose, kafka, "/var/lib/kafka/data")
    script = KAFKA_SCRIPT.read_text()
    protocol_map = re.search(r"^listener\.security\.protocol\.map=(.*)$", script, re.M)
    assert protocol_map, "no listener.security.protocol.map"
    protocols = {pair.split(":")[1] for pair in protocol_map.group(1).split(",")}
    assert protocols == {"SASL_PLAINTEXT"}, protocols
    assert "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer" in script
    assert "allow.everyone.if.no.acl.found=false" in script
    assert "auto.create.topics.enable=false" in script
    assert "User:ANONYMOUS" not in script
    # Healthy once this start of the server has finished and its client port accepts.
    assert kafka["healthcheck"]["test"] == ["CMD", "bash", "/opt/antrean/kafka.sh", "health"]
    assert "Kafka Server started" in script
    subprocess.run(["bash", "-n", str(KAFKA_SCRIPT)], check=True)


def test_init_secrets_writes_every_secret_compose_mounts(compose, tmp_path):
    (tmp_path / "infra" / "compose").mkdir(parents=True)
    script = tmp_path / "infra" / "compose" / "init-secrets.sh"
    script.write_text(INIT_SECRETS.read_text())
    subprocess.run(["bash", str(script)], check=True, capture_output=True)
    folder = tmp_path / "secrets"
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    for name, secret in compose["secrets"].items():
        path = tmp_path / default_of(secret["file"])
        assert path.is_file(), name
        assert path.read_text().strip(), name
    api_dsn = (folder / "api_database_url").read_text()
    assert api_dsn.startswith("postgresql://antrean_api:")
    # No host: compose gives PGHOST/PGPORT, so an external PostgreSQL needs no new secrets.
    assert api_dsn.endswith("@/antrean")
    assert (folder / "db_api_password").read_text() in api_dsn
    before = (folder / "auth_jwt_secret").read_text()
    subprocess.run(["bash", str(script)], check=True, capture_output=True)
    assert (folder / "auth_jwt_secret").read_text() == before, "existing secrets are kept"


def assert_named_volume(compose: dict[str, Any], service: dict[str, Any], target: str) -> None:
    named = set(compose.get("volumes") or {})
    mounts = [str(v).split(":") for v in service.get("volumes", [])]
    assert any(m[0] in named and m[1] == target for m in mounts), (mounts, named)


def test_every_variable_compose_interpolates_is_documented_in_env_example():
    documented = set(env_example_entries())
    lines = [line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#")]
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", "\n".join(lines)))
    assert used <= documented, f"undocumented: {sorted(used - documented)}"


def test_env_example_lists_every_public_variable_with_a_comment():
    entries = env_example_entries()
    missing = CONTRACT_ENV_VARS - set(entries)
    assert not missing, f".env.example lacks {sorted(missing)}"
    lines = ENV_EXAMPLE.read_text().splitlines()
    for index, line in enumerate(lines):
        match = ASSIGNMENT.match(line)
        if match and match.group(1) is None:
            previous = next((p for p in reversed(lines[:index]) if p.strip()), "")
            assert previous.lstrip().startswith("#"), f"{match.group(2)} has no comment"


def test_env_example_defaults_to_production_and_holds_no_active_secret():
    entries = env_example_entries()
    assert entries["APP_ENV"] == ("production", True)
    for name, (_value, active) in entries.items():
        if active and SECRET_NAME.search(name):
            pytest.fail(f"{name} is active in .env.example: secrets belong in ./secrets/")
    assert not re.search(r"^\s*env_file:.*secrets", COMPOSE.read_text(), re.M)


def test_dockerfile_builds_in_stages_from_slim_python_and_runs_the_project_as_non_root(services):
    text = DOCKERFILE.read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(bases) >= 2, "multi-stage: a builder stage and the final stage"
    assert all(base == "${PYTHON_IMAGE}" for base in bases), bases
    default = re.search(r"^ARG PYTHON_IMAGE=(python:3\.11\.\d+-slim-bookworm)$", text, re.M)
    assert default, "the base image is an exact version"
    arg = services["cancel-api"]["build"]["args"]["PYTHON_IMAGE"]
    assert arg == f"${{PYTHON_IMAGE:-{default.group(1)}}}"
    assert env_example_entries()["PYTHON_IMAGE"] == (default.group(1), True)
    assert "# syntax=" not in text, "a frontend image to pull: the engine's own is enough"
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
    assert ".env" in ignored and "secrets" in ignored


def test_the_ops_profile_runs_prometheus_and_grafana_from_pinned_images_on_loopback(services):
    entries = env_example_entries()
    for name in OPS_PROFILE:
        service = services[name]
        assert service["profiles"] == ["ops"], f"{name} must start only with --profile ops"
        image = re.fullmatch(r"\$\{([A-Z_]+):-([\w./-]+):(v?\d+\.\d+\.\d+)\}", service["image"])
        assert image, f"{name}: {service['image']} is not an exact version behind a variable"
        variable, repository, tag = image.groups()
        assert entries[variable] == (f"{repository}:{tag}", True), variable
        ports = [str(p) for p in service["ports"]]
        assert ports and all(p.startswith("127.0.0.1:") for p in ports), ports
        assert str(service["restart"]) == "unless-stopped"


def test_grafana_takes_its_admin_password_from_a_secret_and_lets_no_anonymous_user_in(services):
    grafana = services["grafana"]
    env = environment_of(grafana)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    target = env["GF_SECURITY_ADMIN_PASSWORD__FILE"].removeprefix("/run/secrets/")
    assert secret_targets(grafana)[target] == "grafana_admin_password"
    assert "grafana_admin_password" in INIT_SECRETS.read_text()


def test_prometheus_reads_the_config_and_rules_of_ops_prometheus(services):
    prometheus = services["prometheus"]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in prometheus["volumes"]}
    config = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    folder, _, file_name = config.removeprefix("--config.file=").rpartition("/")
    assert mounts[folder] == "./ops/prometheus"
    assert (ROOT / "ops" / "prometheus" / file_name) == PROMETHEUS_CONFIG
    settings = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert settings["rule_files"] == ["alerts.yml"], "the alert rules, beside the config"
    assert re.fullmatch(r"\d+[sm]", settings["global"]["evaluation_interval"])


def test_prometheus_scrapes_every_app_service_where_it_serves_metrics(services):
    settings = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    scraped = {}
    for job in settings["scrape_configs"]:
        if not job["job_name"].startswith("antrean-"):
            continue  # Prometheus itself
        (discovery,) = job["dns_sd_configs"]
        (name,) = discovery["names"]
        assert name in services, f"{job['job_name']}: no compose service {name}"
        assert job["job_name"] == f"antrean-{name}"
        scraped[name] = discovery["port"]
    assert scraped == METRICS_PORTS
    for name in ("cancel-api", "notifier"):
        # set in compose, so that the ops port runs with APP_ENV=dev too
        assert environment_of(services[name])["OPS_PORT"] == str(METRICS_PORTS[name]), name
        assert environment_of(services[name])["OPS_HOST"] == "0.0.0.0", name


def test_promtool_accepts_the_prometheus_config_and_its_rule_files():
    check = [promtool(), "check", "config", str(PROMETHEUS_CONFIG)]
    done = subprocess.run(check, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
