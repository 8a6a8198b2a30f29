"""Wiring of the cancel API: `create_app(settings)` builds the FastAPI app and its lifespan."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from services.cancel_api import repository as repo
from services.cancel_api.admission import AdmissionMiddleware, BoundedPool, LoopLag, PoolWaits
from services.cancel_api.config import CancelApiSettings
from services.cancel_api.context import ApiContext
from services.cancel_api.errors import install_handlers
from services.cancel_api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from services.cancel_api.openapi import install_openapi
from services.cancel_api.routes import (
    admin,
    cancel,
    ops,
    outbox_admin,
    report,
    sync_status,
    tickets,
    ui,
)
from services.cancel_api.schemas import CancelRequest, RegisterRequest, ResolveRequest
from shared import tracing
from shared.auth import TokenVerifier
from shared.db import close_pool, create_pool
from shared.events import TOPIC_QUEUE_CANCELLED
from shared.heap import freeze_startup_heap, process_gc_pauses
from shared.kafka import KafkaConfig
from shared.logging import get_logger
from shared.outbox import NOTIFY_AFTER_COMMIT, OutboxBell, OutboxRelay
from shared.service_kit import SERVICE_READY, publish_readiness

log = get_logger(__name__)


def create_app(settings: CancelApiSettings | None = None) -> FastAPI:
    settings = settings or CancelApiSettings()
    ctx = ApiContext(
        settings=settings,
        verifier=TokenVerifier(settings, cache_s=settings.auth_token_cache_s),
        topic=settings.topic(TOPIC_QUEUE_CANCELLED),
    )
    lag, waits = LoopLag(), PoolWaits()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # min_size 0: the API starts (and answers 503) even while the database is away.
        # reset_session=False: no round trip per release. This app leaves no session state:
        # its locks are transaction-scoped (pg_advisory_xact_lock, FOR UPDATE), its one session
        # setting is set when a connection opens and never changed, and the relay UNLISTENs
        # before it releases its listening connection. That setting, NOTIFY_AFTER_COMMIT: a
        # cancel's transaction sends no NOTIFY (its commit would wait for every other
        # notifying commit); the bell wakes the relay once it has committed.
        pool = await create_pool(
            settings.database_url.get_secret_value(),
            min_size=0,
            max_size=settings.db_pool_max,
            reset_session=False,
            session_settings=NOTIFY_AFTER_COMMIT,
        )
        ctx.bell = OutboxBell(pool)
        # Requests' waits for a connection are measured (the door's API_MAX_POOL_WAIT_S) and
        # end at DB_ACQUIRE_TIMEOUT_S; the relay waits its turn.
        ctx.pool = BoundedPool(
            pool, waits, settings.db_acquire_timeout_s, settings.api_retry_after_s
        )
        tasks = [
            asyncio.create_task(_housekeeping(pool, settings)),
            asyncio.create_task(lag.run()),
        ]
        ready = SERVICE_READY.labels("cancel-api")
        tasks.append(asyncio.create_task(publish_readiness(ops.checks(ctx)[0], ready)))
        if settings.outbox_relay_enabled:
            # Only queue-cancelled: the API's principal may write nothing else.
            kafka = KafkaConfig.from_settings(settings)
            ctx.relay = OutboxRelay(
                pool, kafka, topics=[ctx.topic], max_attempts=settings.outbox_max_attempts
            )
            ctx.bell.attach(ctx.relay)
            tasks.append(asyncio.create_task(ctx.relay.run()))
        ctx.verifier.start()  # the identity provider's keys, fetched in the background
        try:
            yield
        finally:
            await ctx.verifier.close()
            if ctx.relay is not None:
                ctx.relay.stop()
            for task in tasks[:3]:  # all but the relay's, which stop() ends
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await ctx.bell.close()
            await close_pool(pool)

    app = FastAPI(
        title="Antrean cancel API",
        version="1.0.0",
        lifespan=lifespan,
        default_response_class=JSONResponse,
        # Off in production unless API_DOCS_ENABLED (the API description maps the attack surface).
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url="/redoc" if settings.docs_enabled else None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
        # The request span is RequestContextMiddleware's (shared.tracing): FastAPI's own
        # telemetry would add a second one if a global OpenTelemetry provider were set.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.ctx = ctx
    app.state.settings = settings
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    # Inside the request context (a refusal has its request id and latency), before the body.
    app.add_middleware(
        AdmissionMiddleware,
        max_in_flight=settings.max_in_flight,
        retry_after_s=settings.api_retry_after_s,
        lag=lag,
        max_loop_lag_s=settings.api_max_loop_lag_s,
        waits=waits,
        max_pool_wait_s=settings.api_max_pool_wait_s,
    )
    app.add_middleware(RequestContextMiddleware)
    install_handlers(app)
    app.include_router(ops.router(ctx))
    app.include_router(ui.ui_router(settings))
    app.include_router(cancel.router)
    app.include_router(tickets.router)
    app.include_router(admin.router)
    app.include_router(report.router)
    app.include_router(outbox_admin.router)
    app.include_router(sync_status.router)
    install_openapi(
        app,
        models=(CancelRequest, RegisterRequest, ResolveRequest),
        bpjs_service=settings.bpjs_service,
    )
    return app


async def _housekeeping(pool: asyncpg.Pool, settings: CancelApiSettings) -> None:
    """Forget idempotency keys after their retention (at least 24 h) and old published rows."""
    while True:
        try:
            async with pool.acquire() as conn:
                await repo.purge_idempotency_keys(
                    conn, max(24, settings.idempotency_retention_hours)
                )
                await conn.execute(
                    "delete from outbox where published_at < now() - interval '7 days'"
                )
        except Exception as exc:
            log.warning("housekeeping_failed", error=repr(exc))
        await asyncio.sleep(600)


def create_app_from_env() -> FastAPI:
    tracing.configure("cancel-api")  # in each uvicorn worker process
    app = create_app(CancelApiSettings())
    freeze_startup_heap()  # a serving process only (tests build many apps in one process)
    process_gc_pauses().install()
    return app
