"""Settings of the BPJS sync worker: BPJS, retry, breaker and pool (docs/CONFIGURATION.md)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from shared.bpjs import DEV_CREDENTIALS, BpjsCredentials
from shared.config import BaseServiceSettings, SettingsRefused, is_https, secret_problem
from shared.sync_job.machine import RetryPolicy

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
    # antreanrs: after task 99, read BPJS's record (`getlisttask`) and call a cancellation
    # synced only once task 99 shows there.
    bpjs_readback: bool = Field(True, alias="BPJS_READBACK")
    # Extra regular expressions for BPJS messages that refuse our credentials or clock.
    bpjs_auth_error_patterns: list[str] = Field(default=[], alias="BPJS_AUTH_ERROR_PATTERNS")
    max_in_flight: int = Field(32, alias="SYNC_MAX_IN_FLIGHT", ge=1)
    rate_per_s: float = Field(100.0, alias="SYNC_RATE_PER_S", gt=0)
    first_phase_s: float = Field(20.0, alias="SYNC_FIRST_PHASE_S", gt=0)
    backoff_base_s: float = Field(0.5, alias="SYNC_BACKOFF_BASE_S", gt=0)
    max_interval_s: float = Field(1800.0, alias="SYNC_MAX_INTERVAL_S", gt=0)
    horizon_s: float = Field(7 * 24 * 3600.0, alias="SYNC_HORIZON_S", gt=0)
    lease_s: float = Field(60.0, alias="SYNC_LEASE_S", gt=0)
    # A BPJS cancellation still pending this long after the cancel with no job (its event was
    # lost or dead-lettered) gets its job from the ticket row.
    orphan_after_s: float = Field(120.0, alias="SYNC_ORPHAN_AFTER_S", gt=0)
    # The daily reconciliation of a clinic's day starts this long after its midnight.
    # The zone of clinics without their own (clinic_setting): their day for the reconciliation.
    clinic_timezone: str = Field("Asia/Jakarta", alias="CLINIC_TIMEZONE")
    reconcile_after_s: float = Field(1800.0, alias="SYNC_RECONCILE_AFTER_S", ge=0)
    breaker_threshold: int = Field(5, alias="BREAKER_THRESHOLD", ge=1)
    breaker_cooldown_s: float = Field(2.0, alias="BREAKER_COOLDOWN_S", gt=0)
    breaker_max_cooldown_s: float = Field(60.0, alias="BREAKER_MAX_COOLDOWN_S", gt=0)
    consumer_group: str = Field("bpjs-sync-worker", alias="WORKER_CONSUMER_GROUP")
    # How long a Kafka fetch may wait for more records (fetching.py); 0: answered at once.
    fetch_wait_ms: int = Field(100, alias="WORKER_FETCH_WAIT_MS", ge=0, le=1000)

    @property
    def base_url(self) -> str:
        return self.bpjs_base_url or SIMULATOR_BASES[self.bpjs_service]

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            self.first_phase_s, self.backoff_base_s, self.max_interval_s, self.horizon_s
        )

    @property
    def call_limit_s(self) -> float:
        """How long one BPJS call may keep BPJS silent: its connect and read timeouts."""
        return self.bpjs_connect_timeout_s + self.bpjs_read_timeout_s

    @property
    def rate_wait_s(self) -> float:
        """The longest a call waits for the rate limit when every slot asks at once."""
        return self.max_in_flight / self.rate_per_s

    @model_validator(mode="after")
    def _lease_holds(self) -> WorkerSettings:
        # The heartbeat extends leases while calls run; the lease itself must still outlast
        # two calls and a rate-limit wait, or one missed heartbeat lets a second worker send
        # the same cancellation again.
        needed = 2 * self.call_limit_s + self.rate_wait_s
        if self.lease_s < needed:
            raise SettingsRefused(
                [
                    f"SYNC_LEASE_S ({self.lease_s:g}) is shorter than twice the BPJS call limit"
                    f" plus the rate wait ({needed:g} s: BPJS_CONNECT_TIMEOUT_S +"
                    " BPJS_READ_TIMEOUT_S per call, SYNC_MAX_IN_FLIGHT / SYNC_RATE_PER_S)"
                ]
            )
        return self

    @field_validator("bpjs_credentials_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # compose passes `${BPJS_CREDENTIALS_FILE:-}`: empty means no per-clinic file.
        return None if value == "" else value

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
