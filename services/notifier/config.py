"""Settings of the notifier (docs/CONFIGURATION.md)."""

from typing import ClassVar

from pydantic import Field, model_validator

from shared.config import ServedSettings


class NotifierSettings(ServedSettings):
    uses_database: ClassVar[bool] = False  # no DATABASE_URL needed or checked

    port: int = Field(default=8001, alias="NOTIFIER_PORT")
    # The client must authenticate within this many seconds (docs/WEBSOCKET.md) or gets 4401.
    auth_deadline_s: float = Field(default=10.0, alias="NOTIFIER_AUTH_DEADLINE_S")
    # Websocket pings: a peer that does not answer within the timeout is dropped.
    ping_interval_s: float = Field(default=20.0, alias="NOTIFIER_PING_INTERVAL_S")
    ping_timeout_s: float = Field(default=20.0, alias="NOTIFIER_PING_TIMEOUT_S")
    # Messages waiting for one browser; more than this and the session is closed (4408).
    max_queue: int = Field(default=2000, alias="NOTIFIER_MAX_QUEUE")
    # After `ready`, live messages wait this long for a `resume` so replay comes first.
    resume_window_s: float = Field(default=1.0, alias="NOTIFIER_RESUME_WINDOW_S")
    # Recent records kept in memory per partition for cheap resumes; older ones are read back
    # from Kafka (topics keep 7 days, so resume works for at least 24 hours).
    history_per_partition: int = Field(default=20000, alias="NOTIFIER_HISTORY_PER_PARTITION")
    replay_concurrency: int = Field(default=4, ge=1, alias="NOTIFIER_REPLAY_CONCURRENCY")
    # A resume is replayed only when the client missed at most this many records (of every
    # clinic) within the replay window; anything older, larger, empty or malformed gets
    # `resync` (the UI refetches the list). Bounds one replay's work and memory.
    replay_window_s: float = Field(default=86400.0, gt=0, alias="NOTIFIER_REPLAY_WINDOW_S")
    max_replay_records: int = Field(default=10000, ge=0, alias="NOTIFIER_MAX_REPLAY_RECORDS")
    # Open websockets per instance, and authenticated sessions per user id; more: close 4429.
    max_connections: int = Field(default=10000, ge=1, alias="NOTIFIER_MAX_CONNECTIONS")
    max_connections_per_user: int = Field(
        default=20, ge=1, alias="NOTIFIER_MAX_CONNECTIONS_PER_USER"
    )
    # The cyclic garbage collector (shared/heap.py): the heap is frozen this often, so the
    # collector's automatic passes skip the sessions' long-lived objects (0: CPython's own
    # schedule, full passes over all of them whenever the heap grows by a quarter), and one
    # full pass over everything, reclaiming cycles that died frozen, runs this often.
    gc_freeze_every_s: float = Field(default=1.0, ge=0, alias="NOTIFIER_GC_FREEZE_EVERY_S")
    gc_full_every_s: float = Field(default=3600.0, gt=0, alias="NOTIFIER_GC_FULL_EVERY_S")
    # ... and earlier, once this many connections (and at least as many as are open) closed
    # since the last one: each leaves cycles that would otherwise wait frozen (0: never early).
    gc_full_after_closed: int = Field(default=1000, ge=0, alias="NOTIFIER_GC_FULL_AFTER_CLOSED")
    # /metrics, /healthz and /readyz for Prometheus and probes (ServedSettings).
    ops_port: int = Field(default=8011, alias="OPS_PORT")

    @model_validator(mode="after")
    def _full_pass_not_before_a_freeze(self) -> "NotifierSettings":
        if self.gc_freeze_every_s and self.gc_full_every_s < self.gc_freeze_every_s:
            raise ValueError(
                f"NOTIFIER_GC_FULL_EVERY_S ({self.gc_full_every_s}) must not be below"
                f" NOTIFIER_GC_FREEZE_EVERY_S ({self.gc_freeze_every_s})"
            )
        return self

    @classmethod
    def from_env(cls) -> "NotifierSettings":
        return cls()
