"""Wiring of the cancel API: `create_app(settings)` builds the FastAPI app and its lifespan."""

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import asyncpg
import orjson
import structlog
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from services.cancel_api import repository as repo
from services.cancel_api import service
from services.cancel_api.admin import admin_router
from services.cancel_api.config import CancelApiSettings
from services.cancel_api.errors import Problem, install_handlers
from services.cancel_api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from services.cancel_api.schemas import (
    CancelRequest,
    CancelResponse,
    QueueList,
    QueueOut,
    RegisterRequest,
    queue_out,
)
from services.cancel_api.ui import ui_router
from shared.auth import (
    PERM_CANCEL,
    PERM_CREATE,
    PERM_UPDATE,
    STAFF_PERMISSIONS,
    AuthError,
    AuthUnavailable,
    Principal,
    TokenVerifier,
)
from shared.db import create_pool
from shared.events import TOPIC_QUEUE_CANCELLED
from shared.kafka import KafkaConfig, kafka_reachable
from shared.logging import get_logger
from shared.outbox import OutboxRelay
from shared.service_kit import ops_router

log = get_logger(__name__)
_ID = re.compile(r"^[1-9][0-9]{0,17}$")


IDEMPOTENCY_KEY_MAX = 200
UNAUTHENTICATED_DETAIL = "Token tidak valid atau sudah kedaluwarsa."
# The parameters of `POST /antrian_ruangan/batal/{queue_id}` as FastAPI would document them.
CANCEL_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "queue_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "title": "Queue Id"},
    },
    {
        "name": "idempotency-key",
        "in": "header",
        "required": False,
        "schema": {
            "anyOf": [{"type": "string", "maxLength": IDEMPOTENCY_KEY_MAX}, {"type": "null"}],
            "title": "Idempotency-Key",
        },
    },
    {
        "name": "authorization",
        "in": "header",
        "required": False,
        "schema": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Authorization"},
    },
]


def parse_id(raw: str) -> int:
    if not _ID.match(raw):
        raise Problem(422, "invalid_request", f"id antrean tidak valid: {raw[:40]!r}")
    return int(raw)


class State:
    """Per-app resources, created in the lifespan (no import-time globals)."""

    pool: asyncpg.Pool
    relay: OutboxRelay | None = None


def create_app(settings: CancelApiSettings | None = None) -> FastAPI:
    settings = settings or CancelApiSettings()
    verifier = TokenVerifier(settings, cache_s=settings.auth_token_cache_s)
    state = State()
    topic = settings.topic(TOPIC_QUEUE_CANCELLED)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # min_size 0: the API starts (and answers 503) even while the database is away.
        # reset_session=False: no round trip per release. This app leaves no session state:
        # its locks are transaction-scoped (pg_advisory_xact_lock, FOR UPDATE), it sets no
        # session settings, and the relay UNLISTENs before it releases its listening connection.
        state.pool = await create_pool(
            settings.database_url.get_secret_value(),
            min_size=0,
            max_size=settings.db_pool_max,
            reset_session=False,
        )
        tasks = [asyncio.create_task(_housekeeping(state.pool, settings))]
        if settings.outbox_relay_enabled:
            # Only queue-cancelled: the API's principal may write nothing else.
            kafka = KafkaConfig.from_settings(settings)
            state.relay = OutboxRelay(state.pool, kafka, topics=[topic])
            tasks.append(asyncio.create_task(state.relay.run()))
        verifier.start()  # the identity provider's keys, fetched in the background
        try:
            yield
        finally:
            await verifier.close()
            if state.relay is not None:
                state.relay.stop()
            tasks[0].cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await state.pool.close()

    app = FastAPI(
        title="Antrean cancel API",
        version="1.0.0",
        lifespan=lifespan,
        default_response_class=JSONResponse,
        # Off in production unless API_DOCS_ENABLED (the API description maps the attack surface).
        docs_url="/docs" if settings.docs_enabled else None,
        redoc_url="/redoc" if settings.docs_enabled else None,
        openapi_url="/openapi.json" if settings.docs_enabled else None,
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware)
    install_handlers(app)

    async def db_ok() -> bool:
        async with state.pool.acquire(timeout=2) as conn:
            return bool(await conn.fetchval("select 1"))

    async def kafka_ok() -> bool:
        if state.relay is not None and state.relay.kafka_ok:
            return True
        return await kafka_reachable(KafkaConfig.from_settings(settings))

    # Production serves /metrics on the ops port only (__main__, OPS_PORT).
    # Kafka is reported, not required: the outbox keeps cancelling through a Kafka outage, so a
    # load balancer must not take the API out of service then.
    app.include_router(
        ops_router(
            {"database": db_ok}, reported={"kafka": kafka_ok}, metrics=settings.public_metrics
        )
    )
    app.include_router(ui_router(settings))

    async def authenticate(authorization: str | None) -> Principal:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Problem(401, "unauthenticated", "Token Bearer tidak ada.")
        try:
            who = await verifier.verify(token.strip())
        except AuthError as exc:
            # The verifier's reason stays in the log: it would tell a forger what to fix.
            log.info("token_rejected", reason=str(exc)[:200])
            raise Problem(401, "unauthenticated", UNAUTHENTICATED_DETAIL) from exc
        except AuthUnavailable as exc:
            raise Problem(
                503,
                "auth_unavailable",
                "Kunci penyedia identitas (login) tidak dapat diambil saat ini.",
                headers={"Retry-After": str(exc.retry_after_s)},
            ) from exc
        structlog.contextvars.bind_contextvars(user_id=who.user_id, clinic_id=who.clinic_id)
        return who

    def authorize(who: Principal, permission: str) -> Principal:
        if not who.can(permission):
            raise Problem(403, "forbidden", f"Izin '{permission}' diperlukan.")
        return who

    # async: a plain `def` dependency would run in the thread pool on every request.
    async def principal(authorization: Annotated[str | None, Header()] = None) -> Principal:
        return await authenticate(authorization)

    # Reading the clinic's tickets (names, record and BPJS numbers) needs one staff permission.
    async def staff(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if not who.can_any(STAFF_PERMISSIONS):
            raise Problem(403, "forbidden", "Salah satu izin petugas antrean diperlukan.")
        return who

    def require(permission: str) -> Callable[[Principal], Awaitable[Principal]]:
        async def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
            return authorize(who, permission)

        return check

    Staff = Annotated[Principal, Depends(staff)]

    # The busiest endpoint reads its path parameter and headers itself: FastAPI's per-request
    # parameter and dependency solving cost more CPU than the rest of the handler (api_throughput
    # in bench/README.md has the figures). The checks,
    # their order and their answers are those of the declared parameters
    # (`require(PERM_CANCEL)`, then `Header(max_length=200)`), and the OpenAPI document still
    # declares them (CANCEL_PARAMETERS).
    @app.post(
        "/antrian_ruangan/batal/{queue_id}",
        response_model=CancelResponse,
        responses={409: {}, 404: {}, 422: {}, 503: {}},
        openapi_extra={"parameters": CANCEL_PARAMETERS},
    )
    async def cancel(request: Request) -> Any:
        headers = request.headers
        who = authorize(await authenticate(headers.get("authorization")), PERM_CANCEL)
        idempotency_key = headers.get("idempotency-key")
        if idempotency_key is not None and len(idempotency_key) > IDEMPOTENCY_KEY_MAX:
            raise Problem(
                422,
                "invalid_request",
                f"idempotency-key: String should have at most {IDEMPOTENCY_KEY_MAX} characters",
            )
        qid = parse_id(request.path_params["queue_id"])
        body = await _json_body(request, CancelRequest, optional=True)
        assert isinstance(body, CancelRequest)
        result = await service.cancel_ticket(
            state.pool,
            who,
            qid,
            body,
            topic=topic,
            idempotency_key=idempotency_key,
            request_id=request.state.request_id,
        )
        if idempotency_key is None:
            # A fresh result is already in the shape and order of CancelResponse: rendered
            # directly, to the bytes FastAPI's response_model path would produce. A keyed
            # request may replay a stored (jsonb, reordered) body: that one goes through
            # response_model, which puts the fields back in order.
            return Response(orjson.dumps(result), media_type="application/json")
        return result

    @app.get("/antrian_ruangan", response_model=QueueList)
    async def list_queue(
        who: Staff,
        room_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        status: Annotated[
            str, Query(pattern="^(waiting|called|accepted|done|cancelled)$")
        ] = "waiting",
    ) -> Any:
        async with state.pool.acquire() as conn:
            rows = await repo.list_tickets(conn, who.clinic_id, room_id, status)
        return {"items": [queue_out(r) for r in rows]}

    @app.get("/antrian_ruangan/{queue_id}", response_model=QueueOut)
    async def read_queue(queue_id: str, who: Staff) -> Any:
        qid = parse_id(queue_id)
        async with state.pool.acquire() as conn:
            row = await repo.get_ticket(conn, who.clinic_id, qid)
        if row is None:
            raise Problem(404, "queue_not_found", f"Antrean {qid} tidak ditemukan.")
        return queue_out(row)

    @app.post("/antrian_ruangan", status_code=201, response_model=QueueOut)
    async def register(
        request: Request, who: Annotated[Principal, Depends(require(PERM_CREATE))]
    ) -> Any:
        body = await _json_body(request, RegisterRequest, optional=False)
        assert isinstance(body, RegisterRequest)
        return await service.register_ticket(
            state.pool,
            who,
            body,
            bpjs_service=settings.bpjs_service,
            timezone=settings.clinic_timezone,
            request_id=request.state.request_id,
        )

    @app.post("/antrian_ruangan/terima/{queue_id}", response_model=QueueOut)
    async def accept(
        queue_id: str, request: Request, who: Annotated[Principal, Depends(require(PERM_UPDATE))]
    ) -> Any:
        return await service.move_ticket(
            state.pool, who, parse_id(queue_id), "accept", request_id=request.state.request_id
        )

    @app.post("/antrian_ruangan/selesai/{queue_id}", response_model=QueueOut)
    async def finish(
        queue_id: str, request: Request, who: Annotated[Principal, Depends(require(PERM_UPDATE))]
    ) -> Any:
        return await service.move_ticket(
            state.pool, who, parse_id(queue_id), "finish", request_id=request.state.request_id
        )

    app.include_router(admin_router(lambda: state.pool, require, parse_id, _json_body))
    app.state.resources = state
    app.state.settings = settings
    return app


async def _json_body(request: Request, model: type[Any], *, optional: bool) -> Any:
    raw = await request.body()
    if not raw.strip():
        if optional:
            return model()
        raise Problem(422, "invalid_request", "Body JSON wajib diisi.")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise Problem(
            415,
            "unsupported_media_type",
            f"Content-Type harus application/json, bukan {ctype or 'kosong'!r}.",
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Problem(422, "invalid_request", f"Body bukan JSON yang valid: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise Problem(422, "invalid_request", detail) from exc


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
    return create_app(CancelApiSettings())
