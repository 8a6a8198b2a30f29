"""One authenticated websocket session: its audience, a bounded send queue and a writer task."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, replace
from typing import Protocol

import orjson

from services.notifier import cursor
from services.notifier.cursor import TP, Position
from services.notifier.messages import Audience, Routed, delivers
from services.notifier.metrics import NotifierMetrics
from shared.logging import get_logger

log = get_logger(__name__)

CLOSE_TOO_SLOW = 4408  # the session fell too far behind: the client reconnects and resumes
CLOSE_UNAUTHENTICATED = 4401  # no, bad or expired token (or no auth message in time)
CLOSE_FORBIDDEN = 4403  # an authentic token that is not a usable staff token


class Socket(Protocol):
    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


@dataclass(frozen=True)
class Entry:
    """One Kafka record as the hub saw it; `pos` is the hub's position just after it."""

    tp: TP
    offset: int
    timestamp: int
    routed: Routed | None
    pos: Position
    text: str | None = None  # the message with the hub's cursor, rendered once for everyone


def render(routed: Routed, pos: Position) -> str:
    return orjson.dumps({**routed.body, "cursor": cursor.encode(pos)}).decode()


@dataclass(frozen=True)
class _Close:
    code: int
    reason: str


class Session:
    """Live messages are held until the resume window ends, so a replay always comes first."""

    def __init__(
        self, ws: Socket, audience: Audience, max_queue: int, metrics: NotifierMetrics
    ) -> None:
        self.ws = ws
        self.audience = audience
        self.max_queue = max_queue
        self.metrics = metrics
        self.queue: asyncio.Queue[tuple[str, str, float] | _Close] = asyncio.Queue()
        self.holding = True
        self.replaying = False
        self.held: list[Entry] = []
        self.floor: Position | None = None  # set by a resume: nothing below it is sent again
        self.closed = False
        self.closed_event = asyncio.Event()
        self._room = asyncio.Event()  # set whenever the writer takes an item (or on close)

    def subscribe(self, rooms: frozenset[str] | None) -> None:
        self.audience = replace(self.audience, rooms=rooms)

    def send_control(self, message: dict[str, object]) -> None:
        """ready / pong / error: not events, queued like everything else to keep order."""
        self._put(orjson.dumps(message).decode(), str(message["type"]))

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
        text = entry.text
        if self.floor is not None:
            if entry.offset < self.floor.get(entry.tp, 0):
                return  # this client saw it already (from another instance ahead of us)
            if cursor.covers(entry.pos, self.floor):
                self.floor = None
            else:
                text = render(entry.routed, cursor.maximum(entry.pos, self.floor))
        if text is None:
            text = render(entry.routed, entry.pos)
        self._put(text, entry.routed.body["type"])

    async def put_replayed(self, text: str, kind: str) -> None:
        """Replay waits for room in the queue instead of overflowing it."""
        while not self.closed and self.queue.qsize() >= self.max_queue:
            self._room.clear()
            await self._room.wait()
        self._put(text, kind)

    def release(self, skip_ids: frozenset[str] = frozenset()) -> None:
        """End the hold: send what arrived meanwhile (minus what a replay already sent)."""
        held, self.held, self.holding, self.replaying = self.held, [], False, False
        for entry in held:
            if entry.routed is not None and entry.routed.event_id not in skip_ids:
                self._push_live(entry)

    def _put(self, text: str, kind: str) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= self.max_queue:
            self.abort(CLOSE_TOO_SLOW, "too far behind")
            return
        self.queue.put_nowait((text, kind, time.monotonic()))

    def abort(self, code: int, reason: str) -> None:
        """Close from the server side; whatever is still queued is dropped (the client resumes)."""
        if self.closed:
            return
        self.closed = True
        self.metrics.closed.labels(reason=str(code)).inc()
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(_Close(code, reason))
        self._room.set()

    async def run_writer(self) -> None:
        try:
            while True:
                item = await self.queue.get()
                self._room.set()
                if isinstance(item, _Close):
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self.ws.close(item.code, item.reason), 5)
                    return
                text, kind, queued_at = item
                await self.ws.send_text(text)
                self.metrics.sent_of(kind).inc()
                self.metrics.send_lag.observe(time.monotonic() - queued_at)
        except Exception as exc:  # a broken socket ends only this session
            log.info("session_send_failed", error=repr(exc), user_id=self.audience.user_id)
        finally:
            self.closed = True
            self._room.set()
            self.closed_event.set()
