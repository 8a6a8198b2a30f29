"""One authenticated websocket session: its audience, its backlog and how it writes.

A message is written to the socket at once when the socket takes it without waiting (the
common case, as `websockets.broadcast` does: no task switch per delivery). Only when the peer
is slow does it wait in the session's backlog, drained in order by a writer task started for
that; a backlog longer than `max_queue` closes the session with 4408 (the client resumes).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Protocol

import orjson
from websockets.frames import Frame, Opcode

from services.notifier import cursor
from services.notifier.cursor import TP, Position
from services.notifier.messages import Audience, Routed, delivers
from services.notifier.metrics import NotifierMetrics
from shared.logging import get_logger

log = get_logger(__name__)

CLOSE_TOO_SLOW = 4408  # the session fell too far behind: the client reconnects and resumes
CLOSE_UNAUTHENTICATED = 4401  # no, bad or expired token (or no auth message in time)
CLOSE_FORBIDDEN = 4403  # an authentic token that is not a usable staff token
CLOSE_TOO_MANY = 4429  # too many connections (this instance, or this user)
CLOSE_TRY_AGAIN = 1013  # not ready (Kafka) or a resume could not be served: retry later


class Socket(Protocol):
    def write_now(self, frame: bytes) -> bool:
        """Write an encoded text frame if the socket takes it without waiting; else False."""
        ...

    async def send(self, data: bytes) -> None:
        """Write a text message, waiting while the peer reads slowly."""
        ...

    async def close(self, code: int, reason: str) -> None: ...


@dataclass(frozen=True)
class Entry:
    """One Kafka record as the hub saw it; `pos` is the hub's position just after it."""

    tp: TP
    offset: int
    timestamp: int
    routed: Routed | None
    pos: Position
    out: Outgoing | None = None  # the message with the hub's cursor, encoded once for everyone


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message and its whole websocket frame. A server's frames are not masked (RFC 6455
    5.1) and this server negotiates no extension, so one encoded frame serves every socket."""

    payload: bytes
    frame: bytes

    @classmethod
    def of(cls, payload: bytes) -> Outgoing:
        frame = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
        return cls(payload, frame)


def render(routed: Routed, pos: Position) -> Outgoing:
    return Outgoing.of(orjson.dumps({**routed.body, "cursor": cursor.encode(pos)}))


class Session:
    """Live messages are held until the resume window ends, so a replay always comes first."""

    def __init__(
        self, ws: Socket, audience: Audience, max_queue: int, metrics: NotifierMetrics
    ) -> None:
        self.ws = ws
        self.audience = audience
        self.max_queue = max_queue
        self.metrics = metrics
        self.backlog: deque[tuple[Outgoing, str, float]] = deque()
        self.writer: asyncio.Task[None] | None = None
        self.holding = True
        self.replaying = False
        self.held: list[Entry] = []
        self.floor: Position | None = None  # set by a resume: nothing below it is sent again
        self.closed = False
        self._room = asyncio.Event()  # set whenever the backlog shrinks (or on close)
        self._closer: asyncio.Task[None] | None = None  # the closing handshake `abort` began

    def subscribe(self, rooms: frozenset[str] | None) -> None:
        self.audience = replace(self.audience, rooms=rooms)

    def send_control(self, message: dict[str, object]) -> None:
        """ready / pong / error: not events, but written in the same order as everything else."""
        self._put(Outgoing.of(orjson.dumps(message)), str(message["type"]))

    def offer(self, entry: Entry) -> None:
        """Called by the hub for every record of this session's clinic."""
        if self.closed or entry.routed is None or not delivers(self.audience, entry.routed):
            return
        if self.holding:
            self.held.append(entry)
            if len(self.held) > self.max_queue:
                self.abort(CLOSE_TOO_SLOW, "too far behind")
            return
        self._push_live(entry)

    def _push_live(self, entry: Entry) -> None:
        assert entry.routed is not None
        out = entry.out
        if self.floor is not None:
            if entry.offset < self.floor.get(entry.tp, 0):
                return  # this client saw it already (from another instance ahead of us)
            if cursor.covers(entry.pos, self.floor):
                self.floor = None
            else:
                out = render(entry.routed, cursor.maximum(entry.pos, self.floor))
        if out is None:
            out = render(entry.routed, entry.pos)
        self._put(out, entry.routed.body["type"])

    async def put_replayed(self, out: Outgoing, kind: str) -> None:
        """Replay waits for room in the backlog instead of overflowing it."""
        while not self.closed and len(self.backlog) >= self.max_queue:
            self._room.clear()
            await self._room.wait()
        self._put(out, kind)

    def release(self, skip_ids: frozenset[str] = frozenset()) -> None:
        """End the hold: send what arrived meanwhile (minus what a replay already sent)."""
        held, self.held, self.holding, self.replaying = self.held, [], False, False
        for entry in held:
            if entry.routed is not None and entry.routed.event_id not in skip_ids:
                self._push_live(entry)

    def _put(self, out: Outgoing, kind: str) -> None:
        if self.closed:
            return
        if not self.backlog:
            try:
                written = self.ws.write_now(out.frame)
            except Exception as exc:  # a broken socket ends only this session
                self._broken(exc)
                return
            if written:
                self.metrics.sent.counts[kind] += 1
                return
        if len(self.backlog) >= self.max_queue:
            self.abort(CLOSE_TOO_SLOW, "too far behind")
            return
        self.backlog.append((out, kind, time.monotonic()))
        if self.writer is None:
            self.writer = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        """Write the backlog in order at the pace the peer reads; ends when it is empty."""
        try:
            while self.backlog and not self.closed:
                out, kind, queued_at = self.backlog[0]
                await self.ws.send(out.payload)
                self.backlog.popleft()
                self._room.set()
                self.metrics.sent.counts[kind] += 1
                self.metrics.send_lag.observe(time.monotonic() - queued_at)
        except Exception as exc:
            self._broken(exc)
        finally:
            self.writer = None

    def _broken(self, exc: BaseException) -> None:
        log.info("session_send_failed", error=repr(exc), user_id=self.audience.user_id)
        self.end()

    def abort(self, code: int, reason: str) -> None:
        """Close from the server side; what is still unsent is dropped (the client resumes)."""
        if self.closed:
            return
        self.metrics.closed.labels(reason=str(code)).inc()
        self.end()
        self._closer = asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code, reason), 5)

    async def closing(self) -> None:
        """Wait for a server-side close started by `abort` to finish (at most its timeout)."""
        if self._closer is not None:
            await asyncio.gather(self._closer, return_exceptions=True)

    def end(self) -> None:
        """The session is over: nothing more is written, the backlog is dropped."""
        self.closed = True
        if self.writer is not None and self.writer is not asyncio.current_task():
            self.writer.cancel()
        self.backlog.clear()
        self._room.set()
