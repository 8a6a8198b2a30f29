"""faust app wiring: a thin agent records a durable job per QueueCancelled; a pool works them.

The agent runs with concurrency 1 (faust issue #606) and never lets an exception escape (faust
would ack and skip the message): it only returns once the job is in PostgreSQL (or the message
is recorded as a dead letter), so an acked offset always has its job.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import faust
import structlog
from prometheus_client import Counter

from services.bpjs_sync_worker import jobs, ops, verify
from services.bpjs_sync_worker.config import WorkerSettings
from services.bpjs_sync_worker.fetching import use_batched_fetches
from services.bpjs_sync_worker.pool import JobPool
from services.bpjs_sync_worker.producer import use_idempotent_producer
from services.bpjs_sync_worker.sweepers import Sweepers
from shared import tracing
from shared.bpjs import BpjsClient
from shared.db import close_pool, create_pool
from shared.events import (
    TOPIC_BPJS_SYNC_FAILED,
    TOPIC_BPJS_SYNCED,
    TOPIC_QUEUE_CANCELLED,
    QueueCancelledData,
    decode_event,
)
from shared.events.envelope import UnknownEventError
from shared.heap import process_gc_pauses
from shared.kafka import KafkaConfig, TopicMismatch, TopicsMissing, TopicSpec, ensure_topics
from shared.logging import configure_logging, get_logger
from shared.outbox import OutboxRelay
from shared.sync_job import machine, store

log = get_logger(__name__)
# handling: recorded, duplicate, not_bpjs, or the dead-letter reason (verify.py)
RECEIVED = Counter("bpjs_worker_events_total", "QueueCancelled events by handling", ["handling"])


class Runtime:
    """Resources created when the worker starts (not at import time)."""

    db: asyncpg.Pool | None = None
    pool: JobPool | None = None
    client: BpjsClient | None = None
    task: asyncio.Task[None] | None = None
    relay: OutboxRelay | None = None
    relay_task: asyncio.Task[None] | None = None
    gauges: ops.Gauges | None = None

    def __init__(self, settings: WorkerSettings) -> None:
        self.started = asyncio.Event()
        self.policy = settings.retry_policy()
        self.plan = machine.Plan(settings.bpjs_send_task99, settings.bpjs_readback)


def create_worker(settings: WorkerSettings) -> faust.App:
    # The app id is the Kafka consumer group: every worker process of a deployment shares it.
    kafka = KafkaConfig.from_settings(settings)
    app = faust.App(
        settings.consumer_group,
        broker=[f"kafka://{h}" for h in kafka.bootstrap.split(",")],
        broker_credentials=kafka.faust_credentials(),
        store="memory://",
        value_serializer="raw",
        key_serializer="raw",
        # faust's own topics (its leader-assignor topic) are made like the deployment's.
        topic_partitions=settings.kafka_topic_partitions,
        topic_replication_factor=settings.kafka_replication_factor,
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        web_port=settings.port,
        web_bind=settings.http_host,
        web_in_thread=False,
        broker_commit_interval=1.0,
        producer_acks=-1,
        # A killed worker's partitions move to the others within ~10 s, not faust's default 60 s.
        broker_session_timeout=10,
        broker_heartbeat_interval=3,
        datadir=f"/tmp/faust-{settings.consumer_group}",  # noqa: S108 - memory store only
    )
    use_idempotent_producer(app)
    if settings.fetch_wait_ms:
        use_batched_fetches(app, settings.fetch_wait_ms)
    rt = Runtime(settings)
    ready = ops.checks(settings, lambda: rt.db, lambda: rt.task)
    topic = app.topic(settings.topic(TOPIC_QUEUE_CANCELLED), value_type=bytes, key_type=bytes)

    @app.agent(topic, concurrency=1)
    async def queue_cancelled(stream: Any) -> None:
        async for event in stream.events():
            await _handle(rt, settings, event)

    @app.task  # type: ignore[untyped-decorator]
    async def start_pool() -> None:
        # faust (mode) installs its own log format when the worker starts: put ours back.
        configure_logging("bpjs-sync-worker", settings.log_level, stream=sys.__stderr__)
        process_gc_pauses().install()  # python_gc_pause_seconds, as every service
        rt.gauges = ops.Gauges(settings, ready)
        rt.gauges.start()  # service_ready is 0 until the database answers and the pool runs
        rt.db = await _connect(settings)
        rt.client = BpjsClient(
            settings.base_url,
            service=settings.bpjs_service,
            content_type=settings.bpjs_content_type,
            connect_timeout=settings.bpjs_connect_timeout_s,
            read_timeout=settings.bpjs_read_timeout_s,
            max_connections=settings.max_in_flight,
            auth_error_patterns=settings.bpjs_auth_error_patterns,
        )
        rt.pool = JobPool(rt.db, rt.client, settings)
        Sweepers(rt.pool).register()
        rt.task = asyncio.create_task(rt.pool.run())
        # Result events leave through the outbox; this relay (and the API's) publishes them.
        # Only the worker's own topics: its principal may not write queue-cancelled.
        own = [settings.topic(TOPIC_BPJS_SYNCED), settings.topic(TOPIC_BPJS_SYNC_FAILED)]
        rt.relay = OutboxRelay(rt.db, kafka, topics=own, max_attempts=settings.outbox_max_attempts)
        rt.relay_task = asyncio.create_task(rt.relay.run())
        rt.started.set()
        log.info("job_pool_started", owner=rt.pool.owner, in_flight=settings.max_in_flight)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _shutdown(_: Any, **__: Any) -> None:
        if rt.pool is not None:
            await rt.pool.stop()  # let in-flight BPJS calls finish and store their outcome
        if rt.task is not None:
            await asyncio.gather(rt.task, return_exceptions=True)
        if rt.relay is not None and rt.relay_task is not None:
            rt.relay.stop()  # after the pool: the last results are still published
            await asyncio.gather(rt.relay_task, return_exceptions=True)
        if rt.gauges is not None:
            await rt.gauges.stop()
        if rt.client is not None:
            await rt.client.aclose()
        if rt.db is not None:
            await close_pool(rt.db)
        log.info("worker_stopped")

    ops.pages(app, ready)
    return app


async def wait_for_topics(settings: WorkerSettings) -> None:
    """Wait (as long as it takes) until Kafka answers and the contract's topics exist; the
    worker never creates them (`python -m shared.topics` does). TopicMismatch: they exist with
    other partitions or replication than the settings say (its principal cannot read
    min.insync.replicas, which `shared.topics` checks)."""
    names = [
        settings.topic(t)
        for t in (TOPIC_QUEUE_CANCELLED, TOPIC_BPJS_SYNCED, TOPIC_BPJS_SYNC_FAILED)
    ]
    kafka, spec = KafkaConfig.from_settings(settings), TopicSpec.from_settings(settings)
    delay = 0.5
    while True:
        try:
            await ensure_topics(kafka, names, spec, create=False, check_configs=False)
            return
        except TopicMismatch:
            raise
        except TopicsMissing as exc:  # the topics job may still be running
            log.warning("kafka_topics_missing", error=str(exc), retry_in_s=delay)
        except Exception as exc:  # Kafka may start after us
            log.warning("kafka_unreachable", error=repr(exc), retry_in_s=delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10)


async def _connect(settings: WorkerSettings) -> asyncpg.Pool:
    delay = 0.5
    while True:
        try:
            # No reset round trip per release: the worker leaves no session state (row locks
            # only; its LISTEN has its own connection; the relay UNLISTENs before releasing).
            return await create_pool(
                settings.database_url.get_secret_value(),
                min_size=1,
                max_size=settings.max_in_flight + 4,
                reset_session=False,
            )
        except Exception as exc:
            log.warning("database_unreachable", error=repr(exc), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)


async def _handle(rt: Runtime, settings: WorkerSettings, event: Any) -> None:
    """Record the job (or a dead letter); retries forever on database errors, never raises."""
    message = event.message
    delay = 0.2
    while True:
        try:
            await rt.started.wait()
            await _record(rt, settings, message)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "job_record_failed", error=repr(exc), offset=message.offset, retry_in_s=delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)


async def _record(rt: Runtime, settings: WorkerSettings, message: Any) -> None:
    """A job for an event the database confirms; a dead letter (with its reason) otherwise."""
    assert rt.db is not None
    try:
        cloud = decode_event(message.value)
        data = cloud.payload()
        if not isinstance(data, QueueCancelledData):
            raise UnknownEventError(f"{cloud.type} does not belong on this topic")
        if not _is_uuid(cloud.id):  # the job keeps it in a uuid column, as the outbox does
            raise UnknownEventError("the event id is not a UUID")
        if not 0 < data.queue_id <= verify.BIGINT_MAX:
            raise UnknownEventError("queue_id out of range")
    except UnknownEventError as exc:
        await _dead_letter(rt, settings, message, exc.reason, str(exc))
        return
    if data.payer != "BPJS":
        RECEIVED.labels("not_bpjs").inc()  # nothing to send to BPJS, whatever the row says
        return
    ids = {"queue_id": data.queue_id, "event_clinic_id": data.clinic_id, "event_id": cloud.id}
    # The job keeps this span's context: its attempts continue the cancel's trace.
    with (
        tracing.span(
            "record QueueCancelled",
            parent=cloud.traceparent,
            kind=tracing.SpanKind.CONSUMER,
            attributes={"queue_id": data.queue_id, "messaging.message.id": cloud.id},
        ),
        structlog.contextvars.bound_contextvars(queue_id=data.queue_id),
    ):
        try:
            async with rt.db.acquire() as conn:
                ticket = await jobs.fetch_ticket(conn, data.queue_id)
                problems = (
                    None
                    if ticket is None
                    else verify.mismatches(ticket, data, settings.bpjs_service)
                )
                if ticket is None or problems:
                    reason = verify.UNKNOWN_TICKET if ticket is None else verify.EVENT_MISMATCH
                    verify.security_event(
                        reason,
                        stage="record",
                        **ids,
                        ticket_clinic_id=ticket and ticket.clinic_id,
                        fields=problems or [],
                        topic=message.topic,
                        partition=message.partition,
                        offset=message.offset,
                    )
                    detail = f"{reason}: " + (", ".join(problems) if problems else "no such ticket")
                    await _dead_letter(rt, settings, message, reason, detail, conn=conn)
                    return
                job = machine.new_job(
                    datetime.now(UTC),
                    rt.policy,
                    confirmable=rt.plan.confirmable(settings.bpjs_service),
                )
                created = await store.insert(
                    conn,
                    data,
                    cloud.id,
                    job,
                    service=settings.bpjs_service,
                    traceparent=tracing.current_traceparent(),
                )
        except asyncpg.DataError as exc:
            # Text PostgreSQL cannot store (e.g. NUL): retrying would block the partition forever.
            await _dead_letter(rt, settings, message, verify.INVALID, f"not storable: {exc}"[:300])
            return
    RECEIVED.labels("recorded" if created else "duplicate").inc()
    if created and rt.pool is not None:
        rt.pool.wake.set()


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


async def _dead_letter(
    rt: Runtime,
    settings: WorkerSettings,
    message: Any,
    reason: str,
    error: str,
    conn: asyncpg.Connection | None = None,
) -> None:
    """Keep a message we cannot act on where an operator can see it (never drop it silently)."""
    assert rt.db is not None
    args = (
        settings.consumer_group,
        message.topic,
        message.partition,
        message.offset,
        message.key,
        message.value,
        reason,
        error,
    )
    if conn is not None:
        await jobs.record_dead_letter(conn, *args)
    else:
        async with rt.db.acquire() as own:
            await jobs.record_dead_letter(own, *args)
    RECEIVED.labels(reason).inc()
    log.error("dead_letter", topic=message.topic, offset=message.offset, reason=reason, error=error)
