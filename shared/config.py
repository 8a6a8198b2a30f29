"""Settings common to every service (12-factor: environment variables of CONTRACT.md §2)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_JWT_SECRET = "dev-only-jwt-secret-not-for-production"  # noqa: S105 - printed by make up
DEV_DATABASE_URL = "postgresql://antrean:antrean@127.0.0.1:5432/antrean"


class MissingSecretError(RuntimeError):
    """A secret has no value outside dev mode: the service must refuse to start."""


class BaseServiceSettings(BaseSettings):
    """Settings every service shares; each service subclasses it with its own fields."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    app_env: Literal["dev", "test", "production"] = Field("dev", alias="APP_ENV")
    database_url: SecretStr = Field(SecretStr(DEV_DATABASE_URL), alias="DATABASE_URL")
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", alias="KAFKA_BOOTSTRAP_SERVERS")
    # Tests give every run its own topics; production leaves this empty.
    kafka_topic_prefix: str = Field("", alias="KAFKA_TOPIC_PREFIX")
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
        """The real Kafka topic name of a logical topic (CONTRACT.md §5)."""
        return f"{self.kafka_topic_prefix}{name}"

    @property
    def jwt_secret(self) -> str | None:
        if self.auth_jwks_url:
            return None  # HS256 is off when the identity provider's JWKS is configured
        if self.auth_jwt_secret is not None:
            return self.auth_jwt_secret.get_secret_value()
        return DEV_JWT_SECRET if self.is_dev else None

    @model_validator(mode="after")
    def _refuse_missing_secrets(self) -> BaseServiceSettings:
        if self.is_dev:
            return self
        missing = [name for name in self.required_secrets() if not self._has(name)]
        if missing:
            raise MissingSecretError(
                "refusing to start in production without: " + ", ".join(sorted(missing))
            )
        return self

    def required_secrets(self) -> list[str]:
        """Environment variables that must be set outside dev mode."""
        needed = ["DATABASE_URL"]
        if not self.auth_jwks_url:
            needed.append("AUTH_JWT_SECRET")
        return needed

    def _has(self, env_name: str) -> bool:
        for name, field in type(self).model_fields.items():
            if field.alias == env_name:
                return name in self.model_fields_set and getattr(self, name) is not None
        return False
