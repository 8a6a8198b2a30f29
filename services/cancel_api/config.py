"""Settings of the cancel API (docs/CONFIGURATION.md)."""

from typing import Literal

from pydantic import Field, field_validator

from shared.clinics import zone
from shared.config import ServedSettings

# API_MAX_IN_FLIGHT when unset: this many requests per pooled connection.
IN_FLIGHT_PER_CONNECTION = 4


class CancelApiSettings(ServedSettings):
    port: int = Field(8000, alias="CANCEL_API_PORT")
    workers: int = Field(1, alias="CANCEL_API_WORKERS")
    bpjs_service: Literal["antreanrs", "antreanfktp"] = Field("antreanrs", alias="BPJS_SERVICE")
    notifier_public_url: str = Field("ws://127.0.0.1:8001/ws", alias="NOTIFIER_PUBLIC_URL")
    # The zone of clinics without their own (`python -m shared.clinics set-time-zone`).
    clinic_timezone: str = Field("Asia/Jakarta", alias="CLINIC_TIMEZONE")
    # The relay runs inside the API process by default; `python -m services.cancel_api.relay`
    # runs it alone (then set this to false on the API replicas).
    outbox_relay_enabled: bool = Field(True, alias="OUTBOX_RELAY_ENABLED")
    # A few connections per database core: more do not commit more, their backends only take
    # CPU from this process, and under overload the requests then queue unseen in its accept
    # queue instead of being refused (bench/README.md, api_saturation).
    db_pool_max: int = Field(8, alias="DB_POOL_MAX")
    # Admission control (services.cancel_api.admission): past these bounds a request is refused
    # at once with 503 `unavailable` and Retry-After instead of queueing. Unset: 4 x DB_POOL_MAX:
    # the pool busy and three times as many waiting for it (a wait too long is refused at the
    # door by API_MAX_POOL_WAIT_S), so a short stall of the database is absorbed, not refused.
    api_max_in_flight: int | None = Field(None, ge=1, alias="API_MAX_IN_FLIGHT")
    api_max_loop_lag_s: float = Field(0.25, ge=0, alias="API_MAX_LOOP_LAG_S")
    api_max_pool_wait_s: float = Field(0.5, ge=0, alias="API_MAX_POOL_WAIT_S")
    # Not a load bound: an admitted request gets no connection for this long only from a
    # database that is not answering (the staff UI gives up on a request after 15 s).
    db_acquire_timeout_s: float = Field(5.0, gt=0, alias="DB_ACQUIRE_TIMEOUT_S")
    api_retry_after_s: int = Field(1, ge=0, alias="API_RETRY_AFTER_S")
    max_body_bytes: int = Field(16 * 1024, alias="MAX_BODY_BYTES")
    # Verified tokens are remembered this long (never past their exp); 0 verifies every request.
    auth_token_cache_s: float = Field(30.0, ge=0, alias="AUTH_TOKEN_CACHE_S")
    # A job the admin endpoints create (the worker has none yet) gets the worker's timeline.
    sync_first_phase_s: float = Field(20.0, alias="SYNC_FIRST_PHASE_S", gt=0)
    sync_horizon_s: float = Field(7 * 24 * 3600.0, alias="SYNC_HORIZON_S", gt=0)
    idempotency_retention_hours: int = Field(48, alias="IDEMPOTENCY_RETENTION_HOURS")
    ops_port: int = Field(8010, alias="OPS_PORT")
    # /docs and /openapi.json: on in dev/test, off in production unless turned on here.
    api_docs_enabled: bool | None = Field(None, alias="API_DOCS_ENABLED")

    @field_validator("clinic_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return zone(value).key  # a typo refuses the start, not every registration

    @property
    def max_in_flight(self) -> int:
        return self.api_max_in_flight or IN_FLIGHT_PER_CONNECTION * self.db_pool_max

    @property
    def public_metrics(self) -> bool:
        return self.is_dev

    @property
    def docs_enabled(self) -> bool:
        return self.is_dev if self.api_docs_enabled is None else self.api_docs_enabled
