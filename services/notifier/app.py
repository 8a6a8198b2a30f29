"""The notifier's server: the websocket endpoint of CONTRACT.md §6 plus /healthz, /readyz, /metrics.

It runs on the `websockets` library's own asyncio server rather than an ASGI stack: fan-out
writes each message straight to every socket that can take it (see `session.py`), which is
what keeps thousands of sessions within a fraction of a core (bench/README.md, ws_fanout).

Close codes: 4401 no auth message within the deadline, a first message that is not an auth
message, or a missing/invalid/expired token (also when the token expires during the session);
4403 an authentic, unexpired token that is not a usable staff token (no clinic, name or
permission list); 4408 the session fell too far behind (the client reconnects and resumes);
1013 a resume could not be served right now (the client retries); 1001 the server is stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

import jwt
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from services.notifier.config import NotifierSettings
from services.notifier.cursor import CursorError
from services.notifier.hub import Hub
from services.notifier.kafka_source import KafkaSource
from services.notifier.messages import Audience
from services.notifier.metrics import NotifierMetrics
from services.notifier.session import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED, Session
from shared.auth import AuthError, AuthUnavailable, NotStaffToken, Principal, TokenVerifier
from shared.logging import get_logger
from shared.service_kit import run_checks

log = get_logger(__name__)

WS_PATH = "/ws"
WRITE_LIMIT = 64 * 1024  # bytes buffered for one socket before its messages wait in a backlog
# The kernel's send buffer per socket. Left to autotuning it grows to megabytes for a client
# that stops reading, hiding a stalled session (and its memory) from the backlog limit.
SEND_BUFFER = 128 * 1024
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
    # Already verified above; read again only to learn when the session must end (the same
    # clock-skew leeway as the verification, or a just-accepted token would end at once).
    claims = jwt.decode(msg["token"], options={"verify_signature": False})
    return who, float(claims["exp"]) + verifier.leeway_s


class WsSocket:
    """A session's view of its connection: a pre-encoded frame written straight to the socket
    when it keeps up (like `websockets.broadcast`, minus encoding the frame per socket), and
    the connection's own flow-controlled `send` when it does not.

    Writing whole frames to the transport is safe here: websockets writes each of its own
    frames in one `transport.write` as well, so frames never interleave.
    """

    __slots__ = ("conn",)

    def __init__(self, conn: ServerConnection) -> None:
        self.conn = conn

    def write_now(self, frame: bytes) -> bool:
        conn = self.conn
        if conn.protocol.state is not State.OPEN:
            return True  # closing: dropped, the client resumes from its cursor
        if conn.transport.get_write_buffer_size() > WRITE_LIMIT:
            return False
        conn.transport.write(frame)
        return True

    async def send(self, data: bytes) -> None:
        await self.conn.send(data, text=True)

    async def close(self, code: int, reason: str) -> None:
        await self.conn.close(code, reason)


def _response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def _json(status: HTTPStatus, obj: object) -> Response:
    return _response(status, orjson.dumps(obj), "application/json")


class Notifier:
    """Kafka reader, hub and websocket sessions of one notifier instance."""

    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings
        self.verifier = TokenVerifier(settings)
        self.metrics = NotifierMetrics()
        self.source = KafkaSource(settings)
        self.hub = Hub(
            self.metrics,
            self.source.read_range,
            history_per_partition=settings.history_per_partition,
            replay_concurrency=settings.replay_concurrency,
        )

    # -- Kafka ---------------------------------------------------------------------------

    async def _consume(self) -> None:
        def on_lag(highwater: dict[tuple[str, int], int]) -> None:
            self.metrics.consumer_lag.set(self.hub.consumer_lag(highwater))

        while True:
            try:
                self.hub.start(await self.source.start())
                await self.source.run(self.hub.ingest, on_lag)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # retry until Kafka answers
                log.warning("kafka_start_failed", error=repr(exc))
                await self.source.stop()
                await asyncio.sleep(1)

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[None]:
        task = asyncio.create_task(self._consume())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self.source.stop()

    # -- plain HTTP: health, readiness, metrics --------------------------------------------

    async def http(self, _: ServerConnection, request: Request) -> Response | None:
        """Answer the ops endpoints; let only `/ws` go on to the websocket handshake."""
        path = request.path.split("?", 1)[0]
        if path == WS_PATH:
            return None
        if path == "/healthz":
            return _json(HTTPStatus.OK, {"status": "ok"})
        if path == "/readyz":
            results = await run_checks({"kafka": self._kafka_ok})
            ok = all(results.values())
            return _json(
                HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE,
                {"status": "ready" if ok else "not_ready", "checks": results},
            )
        if path == "/metrics":
            return _response(
                HTTPStatus.OK, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST
            )
        return _json(HTTPStatus.NOT_FOUND, {"status": 404, "code": "not_found"})

    async def _kafka_ok(self) -> bool:
        return self.hub.ready.is_set() and self.source.running

    # -- websocket sessions ----------------------------------------------------------------

    async def handler(self, conn: ServerConnection) -> None:
        sock = conn.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        deadline = self.settings.auth_deadline_s
        try:
            first = await asyncio.wait_for(conn.recv(), deadline)
            who, exp = await authenticate(self.verifier, first)
            await asyncio.wait_for(self.hub.ready.wait(), deadline)
        except (TimeoutError, Rejected) as exc:
            code, reason = (
                (exc.code, exc.reason)
                if isinstance(exc, Rejected)
                else (CLOSE_UNAUTHENTICATED, "no auth in time")
            )
            with contextlib.suppress(Exception):
                await conn.close(code, reason[:120])
            return
        except ConnectionClosed:
            return
        await self._serve(conn, who, exp)

    async def _serve(self, conn: ServerConnection, who: Principal, exp: float) -> None:
        settings, hub = self.settings, self.hub
        session = Session(WsSocket(conn), Audience.of(who), settings.max_queue, self.metrics)
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
        except CursorError:
            session.send_control({"type": "error", "code": "bad_cursor"})
            session.release()
        except Exception as exc:  # the client reconnects and resumes again
            log.warning("resume_failed", error=repr(exc))
            session.abort(1013, "resume failed, try again")

    # -- the server --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Server]:
        """Read Kafka and accept connections; on exit, close every session with 1001."""
        s = self.settings
        async with self.reading(), self.verifier:
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
