"""Settings of the BPJS sync worker: BPJS, retry, breaker and pool (docs/CONFIGURATION.md)."""

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr

from shared.bpjs import DEV_CREDENTIALS, BpjsCredentials
from shared.config import BaseServiceSettings, is_https, secret_problem

DEV_BPJS_SECRETS = (
    DEV_CREDENTIALS.secret_key.get_secret_value(),
    DEV_CREDENTIALS.user_key.get_secret_value(),
)

SIMULATOR_BASES = {
    "antreanrs": "http://127.0.0.1:8090/antreanrs_dev",
    "antreanfktp": "http://127.0.0.1:8090/antreanfktp_dev",
}


class WorkerSettings(BaseServiceSettings):
    uses_auth: ClassVar[bool] = False  # verifies no staff tokens: no AUTH_* needed or checked

    http_host: str = Field("127.0.0.1", alias="HTTP_HOST")
    port: int = Field(6066, alias="WORKER_PORT")
    worker_id: str | None = Field(None, alias="WORKER_ID")
    bpjs_service: Literal["antreanrs", "antreanfktp"] = Field("antreanrs", alias="BPJS_SERVICE")
    bpjs_base_url: str | None = Field(None, alias="BPJS_BASE_URL")
    bpjs_cons_id: str = Field(DEV_CREDENTIALS.cons_id, alias="BPJS_CONS_ID")
    bpjs_secret_key: SecretStr = Field(DEV_CREDENTIALS.secret_key, alias="BPJS_SECRET_KEY")
    bpjs_user_key: SecretStr = Field(DEV_CREDENTIALS.user_key, alias="BPJS_USER_KEY")
    # A mounted secrets file with each clinic's own credentials; BPJS_* is the default set.
    bpjs_credentials_file: Path | None = Field(None, alias="BPJS_CREDENTIALS_FILE")
    bpjs_content_type: Literal["json", "form"] = Field("json", alias="BPJS_CONTENT_TYPE")
    bpjs_connect_timeout_s: float = Field(5.0, alias="BPJS_CONNECT_TIMEOUT_S")
    bpjs_read_timeout_s: float = Field(10.0, alias="BPJS_READ_TIMEOUT_S")
    bpjs_send_task99: bool = Field(True, alias="BPJS_SEND_TASK99")
    max_in_flight: int = Field(32, alias="SYNC_MAX_IN_FLIGHT", ge=1)
    rate_per_s: float = Field(100.0, alias="SYNC_RATE_PER_S", gt=0)
    first_phase_s: float = Field(20.0, alias="SYNC_FIRST_PHASE_S", gt=0)
    backoff_base_s: float = Field(0.5, alias="SYNC_BACKOFF_BASE_S", gt=0)
    max_interval_s: float = Field(1800.0, alias="SYNC_MAX_INTERVAL_S", gt=0)
    horizon_s: float = Field(7 * 24 * 3600.0, alias="SYNC_HORIZON_S", gt=0)
    lease_s: float = Field(60.0, alias="SYNC_LEASE_S", gt=0)
    breaker_threshold: int = Field(5, alias="BREAKER_THRESHOLD", ge=1)
    breaker_cooldown_s: float = Field(2.0, alias="BREAKER_COOLDOWN_S", gt=0)
    breaker_max_cooldown_s: float = Field(60.0, alias="BREAKER_MAX_COOLDOWN_S", gt=0)
    consumer_group: str = Field("bpjs-sync-worker", alias="WORKER_CONSUMER_GROUP")

    @property
    def base_url(self) -> str:
        return self.bpjs_base_url or SIMULATOR_BASES[self.bpjs_service]

    def credentials_default(self) -> BpjsCredentials:
        return BpjsCredentials(self.bpjs_cons_id, self.bpjs_secret_key, self.bpjs_user_key)

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        if not self.bpjs_base_url:
            problems.append("BPJS_BASE_URL is missing")
        elif not is_https(self.bpjs_base_url):
            problems.append("BPJS_BASE_URL is not https")
        # With a credentials file every clinic signs with its own set and the defaults are
        # never used; without one the defaults sign every call.
        need_defaults = self.bpjs_credentials_file is None
        for name, field, dev in (
            ("BPJS_CONS_ID", "bpjs_cons_id", ()),
            ("BPJS_SECRET_KEY", "bpjs_secret_key", DEV_BPJS_SECRETS),
            ("BPJS_USER_KEY", "bpjs_user_key", DEV_BPJS_SECRETS),
        ):
            if field not in self.model_fields_set:
                if need_defaults:
                    problems.append(f"{name} is missing")
                continue
            value = getattr(self, field)
            plain = value.get_secret_value() if isinstance(value, SecretStr) else value
            problem = secret_problem(name, plain, dev)
            if problem:
                problems.append(problem)
        return problems
