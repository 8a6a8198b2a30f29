"""The notifier's server: the websocket endpoint (docs/WEBSOCKET.md), /healthz, /readyz, /metrics.

It runs on the `websockets` library's own asyncio server rather than an ASGI stack: fan-out
writes each message straight to every socket that can take it (see `session.py`), which is
what keeps thousands of sessions within a fraction of a core (bench/README.md, ws_fanout).

Close codes: 4401 no auth message within the deadline, a first message that is not an auth
message, or a missing/invalid/expired token (also when the token expires during the session);
4403 an authentic, unexpired token that is not a usable staff token (no clinic, name or
permission list); 4408 the session fell too far behind (the client reconnects and resumes);
4429 too many connections (on this instance, or of this user); 1013 not ready yet (Kafka not
reached) or a resume could not be served right now (the client retries); 1001 stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import jwt
import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from services.notifier.config import NotifierSettings
from services.notifier.connection import WRITE_LIMIT, Flusher, WsSocket, limit_send_buffer
from services.notifier.hub import Hub, Resync
from services.notifier.kafka_source import KafkaSource
from services.notifier.messages import Audience
from services.notifier.metrics import NotifierMetrics
from services.notifier.ops import OpsEndpoints, path_of
from services.notifier.session import (
    CLOSE_FORBIDDEN,
    CLOSE_TOO_MANY,
    CLOSE_TRY_AGAIN,
    CLOSE_UNAUTHENTICATED,
    Session,
)
from shared.auth import (
    STAFF_PERMISSIONS,
    AuthError,
    AuthUnavailable,
    NotStaffToken,
    Principal,
    TokenVerifier,
)
from shared.heap import GcPauses, HeapFreezer
from shared.logging import get_logger
from shared.service_kit import publish_readiness

log = get_logger(__name__)

WS_PATH = "/ws"
LAG_INTERVAL_S = 5.0  # how often notifier_consumer_lag asks the broker for the partitions' ends
MAX_INCOMING = 64 * 1024  # the largest client message (a subscribe to 500 rooms fits)


class Rejected(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def parse(text: str | bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


async def authenticate(verifier: TokenVerifier, text: str | bytes) -> tuple[Principal, float]:
    """The principal and the time its session must end, or Rejected with the close code.

    Close reasons are fixed texts: the verifier's own reason goes to the log only.
    """
    msg = parse(text)
    if msg is None or msg.get("type") != "auth" or not isinstance(msg.get("token"), str):
        raise Rejected(CLOSE_UNAUTHENTICATED, "expected an auth message")
    try:
        who = await verifier.verify(msg["token"])
    except NotStaffToken as exc:  # authentic, but its claims do not make a staff user
        log.info("token_rejected", reason=str(exc)[:200])
        raise Rejected(CLOSE_FORBIDDEN, "not a staff token") from exc
    except AuthUnavailable as exc:  # 1013: the UI keeps reconnecting
        raise Rejected(1013, "identity provider unavailable, try again") from exc
    except AuthError as exc:  # missing, malformed, forged or expired
        log.info("token_rejected", reason=str(exc)[:200])
        raise Rejected(CLOSE_UNAUTHENTICATED, "invalid token") from exc
    if not who.can_any(STAFF_PERMISSIONS):  # as the API's ticket reads: no permission, no news
        log.info("token_rejected", reason="no staff permission", user_id=who.user_id)
        raise Rejected(CLOSE_FORBIDDEN, "no staff permission")
    # Already verified above; read again only to learn when the session must end (the same
    # clock-skew leeway as the verification, or a just-accepted token would end at once).
    claims = jwt.decode(msg["token"], options={"verify_signature": False})
    return who, float(claims["exp"]) + verifier.leeway_s


class Notifier:
    """Kafka reader, hub and websocket sessions of one notifier instance."""

    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings
        self.verifier = TokenVerifier(settings)
        self.metrics = NotifierMetrics()
        self.source = KafkaSource(settings)
        self.flusher = Flusher()  # every session's socket marks it; the hub flushes it
        self.hub = Hub(
            self.metrics,
            self.source.read_range,
            history_per_partition=settings.history_per_partition,
            replay_concurrency=settings.replay_concurrency,
            replay_window_s=settings.replay_window_s,
            max_replay_records=settings.max_replay_records,
            flusher=self.flusher,
        )
        self.ops = OpsEndpoints(self.metrics.registry, {"kafka": self._kafka_ok})
        # Thousands of sessions make a heap whose full collections stall every delivery.
        self.gc_pauses = GcPauses(self.metrics.registry)
        self.heap = (
            HeapFreezer(
                freeze_every_s=settings.gc_freeze_every_s,
                full_every_s=settings.gc_full_every_s,
                registry=self.metrics.registry,
                full_after_released=settings.gc_full_after_closed,
                live=lambda: self.connections,
            )
            if settings.gc_freeze_every_s
            else None
        )
        self.connections = 0
        self.per_user: Counter[str] = Counter()

    # -- Kafka ---------------------------------------------------------------------------

    async def _consume(self) -> None:
        while True:
            try:
                self.hub.start(await self.source.start())
                await self.source.run(self.hub.ingest)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # retry until Kafka answers
                log.warning("kafka_start_failed", error=repr(exc))
                await self.source.stop()
                await asyncio.sleep(1)

    async def measure_lag(self) -> None:
        """`notifier_consumer_lag`: records on the broker past what this notifier has read."""
        if self.hub.ready.is_set():
            self.metrics.consumer_lag.set(self.hub.consumer_lag(await self.source.end_offsets()))

    async def _watch_lag(self) -> None:
        while True:
            await asyncio.sleep(LAG_INTERVAL_S)
            try:
                await self.measure_lag()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the last value stays; readiness tells Kafka is away
                log.warning("consumer_lag_failed", error=repr(exc))

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[None]:
        ready = self.metrics.ready.labels("notifier")
        tasks = [
            asyncio.create_task(self._consume()),
            asyncio.create_task(publish_readiness(self.ops.checks, ready)),
            asyncio.create_task(self._watch_lag()),
        ]
        if self.heap is not None:
            tasks.append(asyncio.create_task(self.heap.run()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.source.stop()

    # -- plain HTTP: health, readiness, metrics --------------------------------------------

    async def http(self, _: ServerConnection, request: Request) -> Response | None:
        """The public port: `/ws` goes on to the handshake; /healthz and /readyz for load
        balancers; /metrics only outside production (there it is on the ops port only)."""
        path = path_of(request)
        if path == WS_PATH:
            return None
        return await self.ops.answer(path, metrics=self.settings.is_dev)

    async def _kafka_ok(self) -> bool:
        return self.hub.ready.is_set() and self.source.running

    # -- websocket sessions ----------------------------------------------------------------

    async def handler(self, conn: ServerConnection) -> None:
        limit_send_buffer(conn)
        self.connections += 1
        self.metrics.connections.inc()
        try:
            await self._admit(conn)
        finally:
            self.connections -= 1
            self.metrics.connections.dec()
            if self.heap is not None:
                self.heap.released()

    async def _admit(self, conn: ServerConnection) -> None:
        """Caps and readiness first (no auth work for a socket that cannot be served), then
        the auth message within the deadline, then the per-user cap."""
        settings = self.settings
        if self.connections > settings.max_connections:
            return await self._refuse(conn, CLOSE_TOO_MANY, "too many connections")
        if not self.hub.ready.is_set():
            return await self._refuse(conn, CLOSE_TRY_AGAIN, "not ready, try again")
        try:
            # Not `wait_for`: its task would hold a closed connection's exception, whose
            # traceback holds that task: a cycle keeping the whole connection until a full pass.
            async with asyncio.timeout(settings.auth_deadline_s):
                first = await conn.recv()
        except TimeoutError:
            return await self._refuse(conn, CLOSE_UNAUTHENTICATED, "no auth in time")
        except ConnectionClosed:
            return None
        try:
            who, exp = await authenticate(self.verifier, first)
        except Rejected as exc:
            return await self._refuse(conn, exc.code, exc.reason)
        if self.per_user[who.user_id] >= settings.max_connections_per_user:
            return await self._refuse(conn, CLOSE_TOO_MANY, "too many connections of this user")
        self.per_user[who.user_id] += 1
        try:
            await self._serve(conn, who, exp)
        finally:
            self.per_user[who.user_id] -= 1
            if self.per_user[who.user_id] <= 0:
                del self.per_user[who.user_id]
        return None

    async def _refuse(self, conn: ServerConnection, code: int, reason: str) -> None:
        self.metrics.closed.labels(reason=str(code)).inc()
        with contextlib.suppress(Exception):
            await conn.close(code, reason[:120])

    async def _serve(self, conn: ServerConnection, who: Principal, exp: float) -> None:
        settings, hub = self.settings, self.hub
        session = Session(
            WsSocket(conn, self.flusher), Audience.of(who), settings.max_queue, self.metrics
        )
        # `ready` is written and the session registered in one step: its cursor is exact.
        session.send_control(
            {
                "type": "ready",
                "user_id": who.user_id,
                "clinic_id": who.clinic_id,
                "cursor": hub.ready_cursor(),
            }
        )
        hub.add(session)
        loop = asyncio.get_running_loop()
        window = loop.call_later(settings.resume_window_s, _release_if_idle, session)
        expiry = loop.call_later(
            max(0.0, exp - time.time()), session.abort, CLOSE_UNAUTHENTICATED, "token expired"
        )
        resume: asyncio.Task[None] | None = None
        try:
            async for raw in conn:
                if session.closed:
                    break
                resume = self._on_message(session, raw) or resume
        except ConnectionClosed:
            pass
        finally:
            window.cancel()
            expiry.cancel()
            hub.remove(session)
            session.end()
            if resume is not None:
                resume.cancel()
            await session.closing()

    def _on_message(self, session: Session, raw: str | bytes) -> asyncio.Task[None] | None:
        msg = parse(raw)
        kind = msg.get("type") if msg else None
        if msg is None:
            session.send_control({"type": "error", "code": "bad_message"})
        elif kind == "ping":
            session.send_control({"type": "pong"})
        elif kind == "subscribe":
            _subscribe(session, msg)
        elif kind == "resume":
            if not session.holding or session.replaying:
                session.send_control({"type": "error", "code": "resume_too_late"})
            else:
                session.replaying = True  # a second resume before this one starts is too late
                return asyncio.create_task(self._resume(session, msg.get("cursor")))
        else:
            session.send_control({"type": "error", "code": "unknown_type"})
        return None

    async def _resume(self, session: Session, raw: Any) -> None:
        try:
            await self.hub.resume(session, raw)
        except Resync as exc:  # the client refetches its list and keeps `ready`'s cursor
            self.metrics.resyncs.labels(reason=exc.reason).inc()
            session.send_control({"type": "resync"})
            session.release()
        except Exception as exc:  # the client reconnects and resumes again
            log.warning("resume_failed", error=repr(exc))
            session.abort(CLOSE_TRY_AGAIN, "resume failed, try again")

    # -- the server --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Server]:
        """Read Kafka and accept connections; on exit, close every session with 1001."""
        s = self.settings
        ops = (
            self.ops.serving(s.ops_bind_host, s.ops_port)
            if s.ops_enabled
            else contextlib.nullcontext()
        )
        async with self.reading(), ops, self.verifier:
            server = await serve(
                self.handler,
                s.http_host,
                s.port,
                process_request=self.http,
                ping_interval=s.ping_interval_s,
                ping_timeout=s.ping_timeout_s,
                close_timeout=5,
                max_size=MAX_INCOMING,
                compression=None,
                write_limit=WRITE_LIMIT,
                server_header=None,
            )
            try:
                with self.gc_pauses:
                    yield server
            finally:
                server.close(close_connections=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(server.wait_closed(), 10)


def _release_if_idle(session: Session) -> None:
    if session.holding and not session.replaying:
        session.release()


def _subscribe(session: Session, msg: dict[str, Any]) -> None:
    rooms = msg.get("room_ids")
    if rooms is None:
        session.subscribe(None)
    elif (
        isinstance(rooms, list)
        and len(rooms) <= 500
        and all(isinstance(r, str) and 0 < len(r) <= 64 for r in rooms)
    ):
        session.subscribe(frozenset(rooms))
    else:
        session.send_control({"type": "error", "code": "bad_subscribe"})
