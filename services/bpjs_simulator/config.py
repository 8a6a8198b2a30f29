"""Settings of the BPJS simulator (env prefix BPJS_SIM_) and the options tests may change live."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.bpjs.credentials import DEV_CREDENTIALS
from shared.config import secrets_dir

AlreadyCancelledMode = Literal["201", "208"]


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
    fktp_ok_code: int | None = None
