"""Wiring of the notifier: `create_app(settings)` with the websocket endpoint of CONTRACT.md §6.

Close codes: 4401 no auth message within the deadline, a first message that is not an auth
message, or a missing/invalid/expired token (also when the token expires during the session);
4403 an authentic, unexpired token that is not a usable staff token (no clinic, name or
permission list); 4408 the session fell too far behind (the client reconnects and resumes);
1013 a resume could not be served right now (the client retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import orjson
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from services.notifier.config import NotifierSettings
from services.notifier.cursor import CursorError
from services.notifier.hub import Hub
from services.notifier.kafka_source import KafkaSource
from services.notifier.messages import Audience
from services.notifier.metrics import NotifierMetrics
from services.notifier.session import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED, Session
from shared.auth import AuthError, Principal, TokenVerifier
from shared.logging import get_logger
from shared.service_kit import ops_router

log = get_logger(__name__)


class Rejected(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def parse(text: str) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def authenticate(verifier: TokenVerifier, text: str) -> tuple[Principal, float]:
    """The principal and token expiry of an auth message, or Rejected with the close code."""
    msg = parse(text)
    if msg is None or msg.get("type") != "auth" or not isinstance(msg.get("token"), str):
        raise Rejected(CLOSE_UNAUTHENTICATED, "expected an auth message")
    try:
        who = verifier.verify(msg["token"])
    except AuthError as exc:
        # The verifier wraps signature/expiry/format failures as "invalid token"; anything
        # else is an authentic token whose claims do not make a staff user.
        text_ = str(exc)
        authentic = not (text_.startswith("invalid token") or text_.startswith("missing token"))
        raise Rejected(CLOSE_FORBIDDEN if authentic else CLOSE_UNAUTHENTICATED, text_) from exc
    # Already verified above; read again only to learn when the session must end.
    claims = jwt.decode(msg["token"], options={"verify_signature": False})
    return who, float(claims["exp"])


def create_app(settings: NotifierSettings | None = None) -> FastAPI:
    settings = settings or NotifierSettings.from_env()
    verifier = TokenVerifier(settings)
    metrics = NotifierMetrics()
    source = KafkaSource(settings)
    hub = Hub(
        metrics,
        source.read_range,
        history_per_partition=settings.history_per_partition,
        replay_concurrency=settings.replay_concurrency,
    )

    def on_lag(highwater: dict[tuple[str, int], int]) -> None:
        metrics.consumer_lag.set(hub.consumer_lag(highwater))

    async def consume() -> None:
        while True:
            try:
                hub.start(await source.start())
                await source.run(hub.ingest, on_lag)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # retry until Kafka answers
                log.warning("kafka_start_failed", error=repr(exc))
                await source.stop()
                await asyncio.sleep(1)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(consume())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await source.stop()

    app = FastAPI(title="Antrean notifier", version="1.0.0", lifespan=lifespan)

    async def kafka_ok() -> bool:
        return hub.ready.is_set() and source.running

    app.include_router(ops_router({"kafka": kafka_ok}, registry=metrics.registry))

    @app.websocket("/ws")
    async def ws_endpoint(ws: WebSocket) -> None:
        await ws.accept()  # closing before accept would be an HTTP 403, not a close code
        try:
            text = await asyncio.wait_for(ws.receive_text(), settings.auth_deadline_s)
            who, exp = authenticate(verifier, text)
            await asyncio.wait_for(hub.ready.wait(), settings.auth_deadline_s)
        except (TimeoutError, Rejected) as exc:
            code, reason = (
                (exc.code, exc.reason)
                if isinstance(exc, Rejected)
                else (CLOSE_UNAUTHENTICATED, "no auth in time")
            )
            with contextlib.suppress(Exception):
                await ws.close(code, reason[:120])
            return
        except (WebSocketDisconnect, RuntimeError, KeyError):
            return
        await serve(ws, who, exp)

    async def serve(ws: WebSocket, who: Principal, exp: float) -> None:
        session = Session(ws, Audience.of(who), settings.max_queue, metrics)
        # `ready` is queued and the session registered in one step: its cursor is exact.
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
        window = loop.call_later(settings.resume_window_s, release_if_idle, session)
        expiry = loop.call_later(
            max(0.0, exp - time.time()), session.abort, CLOSE_UNAUTHENTICATED, "token expired"
        )
        writer = asyncio.create_task(session.run_writer())
        reader = asyncio.create_task(read_loop(ws, session))
        try:
            await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            window.cancel()
            expiry.cancel()
            hub.remove(session)
            reader.cancel()
            if not writer.done():
                session.abort(1000, "bye")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(writer, 5)
            writer.cancel()

    def release_if_idle(session: Session) -> None:
        if session.holding and not session.replaying:
            session.release()

    async def read_loop(ws: WebSocket, session: Session) -> None:
        resume_task: asyncio.Task[None] | None = None
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            while not session.closed:
                msg = parse(await ws.receive_text())
                kind = msg.get("type") if msg else None
                if msg is None:
                    session.send_control({"type": "error", "code": "bad_message"})
                elif kind == "ping":
                    session.send_control({"type": "pong"})
                elif kind == "subscribe":
                    handle_subscribe(session, msg)
                elif kind == "resume":
                    if not session.holding or session.replaying:
                        session.send_control({"type": "error", "code": "resume_too_late"})
                    else:
                        resume_task = asyncio.create_task(do_resume(session, msg.get("cursor")))
                else:
                    session.send_control({"type": "error", "code": "unknown_type"})
        if resume_task is not None:
            resume_task.cancel()

    async def do_resume(session: Session, raw: Any) -> None:
        try:
            await hub.resume(session, raw)
        except CursorError:
            session.send_control({"type": "error", "code": "bad_cursor"})
            session.release()
        except Exception as exc:  # the client reconnects and resumes again
            log.warning("resume_failed", error=repr(exc))
            session.abort(1013, "resume failed, try again")

    def handle_subscribe(session: Session, msg: dict[str, Any]) -> None:
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

    app.state.hub = hub
    app.state.settings = settings
    return app


def create_app_from_env() -> FastAPI:
    return create_app(NotifierSettings.from_env())
