"""Settings common to every service (12-factor environment variables); production fails closed."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import ClassVar, Literal, NoReturn, TypeVar
from urllib.parse import parse_qs, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_JWT_SECRET = "dev-only-jwt-secret-not-for-production"  # noqa: S105 - printed by make up
DEV_DATABASE_URL = "postgresql://antrean:antrean@127.0.0.1:5432/antrean"
# The services' own database roles (migration 0006) and the fixed passwords `make up` and the
# tests give them on the local cluster; a deployment sets its own (docs/SECURITY.md).
API_DB_ROLE = "antrean_api"
WORKER_DB_ROLE = "antrean_worker"
DEV_DB_ROLE_PASSWORDS = {API_DB_ROLE: "antrean-api-dev", WORKER_DB_ROLE: "antrean-worker-dev"}
DEV_DB_PASSWORDS = frozenset({"antrean", *DEV_DB_ROLE_PASSWORDS.values()})
# Every value .env.example ships for a secret (tests/unit/test_config_and_logging.py keeps this
# list and the file in step), plus the usual stand-ins: none of them is ever a real secret.
PLACEHOLDERS = frozenset({"change-me", "changeme", "change_me", "secret", "password", "xxx"})
# Kafka SASL passwords of the dev/test broker, when they are fixed values: refused in production.
DEV_KAFKA_PASSWORDS: frozenset[str] = frozenset()
HS256_MIN_BYTES = 32
# sysexits.h EX_CONFIG: the process refused its configuration (a restart will not help).
EXIT_CONFIG = 78

S = TypeVar("S", bound=BaseSettings)


class SettingsRefused(RuntimeError):
    """Production settings that must not run (missing, placeholder, dev or weak secrets)."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def is_placeholder(value: str) -> bool:
    v = value.strip().lower()
    return v in PLACEHOLDERS or "change-me" in v or "changeme" in v


def secret_problem(name: str, value: str | None, dev_values: Iterable[str] = ()) -> str | None:
    """Why `value` cannot be the production value of secret `name`, or None when it can."""
    if not value:
        return f"{name} is missing"
    if is_placeholder(value):
        return f"{name} is a placeholder value"
    if value in set(dev_values):
        return f"{name} is a dev value"
    return None


def is_https(url: str) -> bool:
    """Whether `url` is an https:// URL (production talks to nothing else over HTTP)."""
    return url.lower().startswith("https://")


def database_url_problem(dsn: str) -> str | None:
    """A production DSN carries a real password (or a client certificate)."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    password = parts.password or next(iter(query.get("password", [])), None)
    if not password:
        if query.get("sslcert") and query.get("sslkey"):
            return None  # client-certificate authentication
        return "DATABASE_URL has no password"
    if is_placeholder(password):
        return "DATABASE_URL has a placeholder password"
    if password in DEV_DB_PASSWORDS:
        return "DATABASE_URL has a dev password"
    return None


def secrets_dir() -> str | None:
    """Where a setting may come from a file named after its variable (a container's mounted
    secrets, e.g. /run/secrets/AUTH_JWT_SECRET); an environment variable wins over the file."""
    path = os.environ.get("SECRETS_DIR", "/run/secrets")
    return path if path and os.path.isdir(path) else None


class BaseServiceSettings(BaseSettings):
    """Settings every service shares; each service subclasses it with its own fields."""

    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", frozen=True, secrets_dir=secrets_dir()
    )
    # What the service talks to: only those settings are checked (and needed) in production.
    uses_database: ClassVar[bool] = True
    uses_auth: ClassVar[bool] = True
    uses_kafka: ClassVar[bool] = True

    app_env: Literal["dev", "test", "production"] = Field("production", alias="APP_ENV")
    database_url: SecretStr = Field(SecretStr(DEV_DATABASE_URL), alias="DATABASE_URL")
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", alias="KAFKA_BOOTSTRAP_SERVERS")
    # Tests give every run its own topics; production leaves this empty.
    kafka_topic_prefix: str = Field("", alias="KAFKA_TOPIC_PREFIX")
    # How the topics are made (`python -m shared.topics` creates them; services verify them).
    kafka_topic_partitions: int = Field(4, ge=1, alias="KAFKA_TOPIC_PARTITIONS")
    kafka_replication_factor: int = Field(1, ge=1, alias="KAFKA_REPLICATION_FACTOR")
    kafka_min_insync_replicas: int = Field(1, ge=1, alias="KAFKA_MIN_INSYNC_REPLICAS")
    auth_jwt_secret: SecretStr | None = Field(None, alias="AUTH_JWT_SECRET")
    auth_jwks_url: str | None = Field(None, alias="AUTH_JWKS_URL")
    auth_audience: str | None = Field(None, alias="AUTH_AUDIENCE")
    auth_issuer: str | None = Field(None, alias="AUTH_ISSUER")
    # Identity-provider keys: refreshed this often; an unknown `kid` triggers at most one fetch
    # per min-refetch period across all requests; leeway tolerates clock skew on exp/iat/nbf.
    auth_jwks_refresh_s: float = Field(300.0, gt=0, alias="AUTH_JWKS_REFRESH_S")
    auth_jwks_min_refetch_s: float = Field(30.0, ge=0, alias="AUTH_JWKS_MIN_REFETCH_S")
    auth_leeway_s: float = Field(30.0, ge=0, alias="AUTH_LEEWAY_S")
    # Kafka client security: one principal per service (docs/SECURITY.md).
    kafka_security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = Field(
        "PLAINTEXT", alias="KAFKA_SECURITY_PROTOCOL"
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "PLAIN"] = Field(
        "SCRAM-SHA-512", alias="KAFKA_SASL_MECHANISM"
    )
    kafka_sasl_username: str | None = Field(None, alias="KAFKA_SASL_USERNAME")
    kafka_sasl_password: SecretStr | None = Field(None, alias="KAFKA_SASL_PASSWORD")
    kafka_ssl_cafile: str | None = Field(None, alias="KAFKA_SSL_CAFILE")
    kafka_ssl_certfile: str | None = Field(None, alias="KAFKA_SSL_CERTFILE")
    kafka_ssl_keyfile: str | None = Field(None, alias="KAFKA_SSL_KEYFILE")
    log_level: str = Field("INFO", alias="LOG_LEVEL")
    # Refusals of one outbox row (too large, say; never an outage) before it is quarantined.
    outbox_max_attempts: int = Field(5, ge=1, alias="OUTBOX_MAX_ATTEMPTS")

    @field_validator(
        "auth_jwt_secret",
        "auth_jwks_url",
        "auth_audience",
        "auth_issuer",
        "kafka_sasl_username",
        "kafka_sasl_password",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `AUTH_ISSUER=` in an .env file means "not set", not "must equal the empty string".
        return None if value == "" else value

    @property
    def is_dev(self) -> bool:
        return self.app_env != "production"

    def topic(self, name: str) -> str:
        """The real Kafka topic name of a logical topic (docs/EVENTS.md)."""
        return f"{self.kafka_topic_prefix}{name}"

    @property
    def jwt_secret(self) -> str | None:
        if self.auth_jwks_url:
            return None  # HS256 is off when the identity provider's JWKS is configured
        if self.auth_jwt_secret is not None:
            return self.auth_jwt_secret.get_secret_value()
        return DEV_JWT_SECRET if self.is_dev else None

    @model_validator(mode="after")
    def _min_insync_within_replication(self) -> BaseServiceSettings:
        # acks=all could never succeed: every publish would fail with NotEnoughReplicas.
        if self.kafka_min_insync_replicas > self.kafka_replication_factor:
            raise ValueError(
                f"KAFKA_MIN_INSYNC_REPLICAS ({self.kafka_min_insync_replicas}) must not exceed"
                f" KAFKA_REPLICATION_FACTOR ({self.kafka_replication_factor})"
            )
        return self

    @model_validator(mode="after")
    def _fail_closed(self) -> BaseServiceSettings:
        if self.app_env == "production":
            problems = self.production_problems()
            if problems:
                raise SettingsRefused(problems)
        return self

    def production_problems(self) -> list[str]:
        """Every reason these settings must not run in production (empty: they may)."""
        problems: list[str | None] = []
        if self.uses_database:
            dsn = self.database_url.get_secret_value()
            if "database_url" not in self.model_fields_set or not dsn:
                problems.append("DATABASE_URL is missing")
            else:
                problems.append(database_url_problem(dsn))
        if self.uses_auth:
            problems.extend(self._auth_problems())
        if self.uses_kafka:
            problems.extend(self._kafka_problems())
        return [p for p in problems if p]

    def _auth_problems(self) -> list[str | None]:
        if self.auth_jwks_url:
            missing = [
                name
                for name, value in (
                    ("AUTH_ISSUER", self.auth_issuer),
                    ("AUTH_AUDIENCE", self.auth_audience),
                )
                if not value
            ]
            return [
                f"AUTH_JWKS_URL is set without {' and '.join(missing)}" if missing else None,
                None if is_https(self.auth_jwks_url) else "AUTH_JWKS_URL is not https",
            ]
        secret = self.auth_jwt_secret.get_secret_value() if self.auth_jwt_secret else None
        problem = secret_problem("AUTH_JWT_SECRET", secret, (DEV_JWT_SECRET,))
        if problem is None and secret is not None and len(secret.encode()) < HS256_MIN_BYTES:
            problem = f"AUTH_JWT_SECRET is shorter than {HS256_MIN_BYTES} bytes"
        return [problem]

    def _kafka_problems(self) -> list[str | None]:
        problems: list[str | None] = []
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL_"):
            if not self.kafka_sasl_username:
                problems.append(
                    f"KAFKA_SASL_USERNAME is missing (KAFKA_SECURITY_PROTOCOL={protocol})"
                )
            password = self.kafka_sasl_password
            problems.append(
                secret_problem(
                    "KAFKA_SASL_PASSWORD",
                    password.get_secret_value() if password else None,
                    DEV_KAFKA_PASSWORDS,
                )
            )
        for name, path in (
            ("KAFKA_SSL_CAFILE", self.kafka_ssl_cafile),
            ("KAFKA_SSL_CERTFILE", self.kafka_ssl_certfile),
            ("KAFKA_SSL_KEYFILE", self.kafka_ssl_keyfile),
        ):
            if path and not os.access(path, os.R_OK):
                problems.append(f"{name} is not a readable file")
        return problems


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each bad variable; the input is never echoed (it may be a secret)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
        for error in exc.errors()
    )


def refuse_to_start(service: str, reason: str) -> NoReturn:
    """One line on stderr and exit code 78 (EX_CONFIG): no traceback for a bad setting."""
    sys.stderr.write(f"{service}: refusing to start: {reason}\n")
    sys.stderr.flush()
    raise SystemExit(EXIT_CONFIG)


class ServedSettings(BaseServiceSettings):
    """A service with a public port and an ops port for Prometheus' /metrics. Production always
    serves the ops port and never /metrics on the public one; dev and test keep /metrics public
    and start the ops port only when OPS_PORT is set (each service has its own default)."""

    http_host: str = Field("127.0.0.1", alias="HTTP_HOST")
    ops_host: str | None = Field(None, alias="OPS_HOST")  # default: HTTP_HOST
    ops_port: int = Field(8010, alias="OPS_PORT")

    @property
    def ops_enabled(self) -> bool:
        return not self.is_dev or "ops_port" in self.model_fields_set

    @property
    def ops_bind_host(self) -> str:
        return self.ops_host or self.http_host


def load_settings(factory: Callable[[], S], service: str) -> S:
    """The service's settings, or a one-line refusal (see `refuse_to_start`)."""
    try:
        return factory()
    except SettingsRefused as exc:
        refuse_to_start(service, str(exc))
    except ValidationError as exc:
        refuse_to_start(service, describe_validation_error(exc))
