"""Settings of the BPJS simulator (env prefix BPJS_SIM_) and the options tests may change live."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.bpjs.credentials import DEV_CREDENTIALS
from shared.config import secrets_dir

AlreadyCancelledMode = Literal["201", "208"]


def _auth_status(value: int) -> int:
    if value not in (401, 403):
        raise ValueError("must be 401 or 403 (leave unset for HTTP 200 with code 201)")
    return value


# An int, not a Literal, so "401" from the environment is accepted as well.
AuthFailureStatus = Annotated[int, AfterValidator(_auth_status)]

# Each kind of authentication failure -> the option holding the message it is answered with.
AUTH_FAILURE_MESSAGES: dict[str, str] = {
    "X-cons-id": "unknown_cons_id_message",
    "X-timestamp": "bad_timestamp_message",
    "X-signature": "bad_signature_message",
    "user_key": "bad_user_key_message",
}


def _env(name: str) -> AliasChoices:
    # BPJS_SIM_<NAME> wins; the worker's BPJS_<NAME> is the fallback so one .env serves both.
    return AliasChoices(f"BPJS_SIM_{name}", f"BPJS_{name}")


class SimulatorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BPJS_SIM_",
        env_file=None,
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        secrets_dir=secrets_dir(),
    )

    app_env: Literal["dev", "test", "production"] = Field(default="production", alias="APP_ENV")
    host: str = "127.0.0.1"
    port: int = 8090
    rs_prefix: str = "/antreanrs_dev"
    fktp_prefix: str = "/antreanfktp_dev"
    cons_id: str = Field(default=DEV_CREDENTIALS.cons_id, validation_alias=_env("CONS_ID"))
    secret_key: SecretStr = Field(
        default=DEV_CREDENTIALS.secret_key, validation_alias=_env("SECRET_KEY")
    )
    user_key: SecretStr = Field(default=DEV_CREDENTIALS.user_key, validation_alias=_env("USER_KEY"))
    # Dev mode may auto-create unknown bookings so the demo works without registering at BPJS.
    dev_autocreate: bool = True
    already_cancelled_mode: AlreadyCancelledMode = "201"
    max_clock_skew_s: int | None = None
    bad_signature_message: str = "Signature tidak sesuai"
    unknown_cons_id_message: str = "X-cons-id tidak terdaftar"
    bad_user_key_message: str = "User key tidak valid"
    bad_timestamp_message: str = "Request expired, waktu tidak sesuai"
    # None: refusals come as HTTP 200 with code 201, as BPJS answers; 401/403 as some gateways do.
    auth_failure_http_status: AuthFailureStatus | None = None
    fktp_ok_code: int = 200
    max_hang_s: float = 300.0
    request_log_size: int = 2000
    fault_seed: int | None = None
    log_level: str = "INFO"


class RuntimeOptions(BaseModel):
    """Behaviour switches the control API may change; `/_sim/reset` restores the settings."""

    model_config = ConfigDict(validate_assignment=True)

    dev_autocreate: bool
    already_cancelled_mode: AlreadyCancelledMode
    max_clock_skew_s: int | None
    bad_signature_message: str
    unknown_cons_id_message: str
    bad_user_key_message: str
    bad_timestamp_message: str
    auth_failure_http_status: AuthFailureStatus | None
    fktp_ok_code: int

    @classmethod
    def from_settings(cls, settings: SimulatorSettings) -> RuntimeOptions:
        return cls.model_validate(settings.model_dump(include=set(cls.model_fields)))


class OptionsPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dev_autocreate: bool | None = None
    already_cancelled_mode: AlreadyCancelledMode | None = None
    max_clock_skew_s: int | None = None
    bad_signature_message: str | None = None
    unknown_cons_id_message: str | None = None
    bad_user_key_message: str | None = None
    bad_timestamp_message: str | None = None
    auth_failure_http_status: AuthFailureStatus | None = None
    fktp_ok_code: int | None = None


class CredentialsPatch(BaseModel):
    """New accepted credentials (BPJS rotating a key); fields left out keep their value."""

    model_config = ConfigDict(extra="forbid")

    cons_id: str | None = Field(None, min_length=1)
    secret_key: SecretStr | None = Field(None, min_length=1)
    user_key: SecretStr | None = Field(None, min_length=1)
