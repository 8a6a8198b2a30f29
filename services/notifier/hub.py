"""The hub: the hub's Kafka position, dedup, recent history, sessions by clinic, and resumes."""

from __future__ import annotations

import asyncio
import heapq
from collections import OrderedDict, defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable

from services.notifier import cursor
from services.notifier.cursor import TP, Position
from services.notifier.messages import Routed, delivers, to_message
from services.notifier.metrics import NotifierMetrics
from services.notifier.session import Entry, Session, render
from shared.events import decode_event
from shared.events.envelope import UnknownEventError
from shared.logging import get_logger

log = get_logger(__name__)

DEDUP_MEMORY = 200_000  # event ids remembered to drop duplicated deliveries


class RawRecord:
    """A Kafka record reduced to what the hub needs (logical topic name, offset, value)."""

    __slots__ = ("offset", "timestamp", "tp", "value")

    def __init__(self, tp: TP, offset: int, timestamp: int, value: bytes | None) -> None:
        self.tp, self.offset, self.timestamp, self.value = tp, offset, timestamp, value


ReadRange = Callable[[dict[TP, tuple[int, int]]], Awaitable[dict[TP, list[RawRecord]]]]


def route(value: bytes | None) -> Routed | None:
    if value is None:
        return None
    try:
        return to_message(decode_event(value))
    except (UnknownEventError, KeyError, TypeError, ValueError) as exc:
        log.warning("event_skipped", error=str(exc)[:300])
        return None


class Hub:
    def __init__(
        self,
        metrics: NotifierMetrics,
        read_range: ReadRange,
        *,
        history_per_partition: int,
        replay_concurrency: int,
    ) -> None:
        self.metrics = metrics
        self.read_range = read_range
        self.position: Position = {}
        self.ready = asyncio.Event()
        self.by_clinic: dict[str, set[Session]] = defaultdict(set)
        self.history: dict[TP, deque[Entry]] = defaultdict(deque)
        self.history_floor: Position = {}  # history holds every record from here on
        self.history_limit = history_per_partition
        self.first_seen: OrderedDict[str, tuple[TP, int]] = OrderedDict()
        self.replay_slots = asyncio.Semaphore(replay_concurrency)

    def start(self, position: Position) -> None:
        """Live reading starts at `position` (the end of every partition at start-up)."""
        self.position = dict(position)
        self.history_floor = dict(position)
        self.ready.set()

    def ready_cursor(self) -> str:
        return cursor.encode(self.position)

    def add(self, session: Session) -> None:
        self.by_clinic[session.audience.clinic_id].add(session)
        self.metrics.sessions.inc()

    def remove(self, session: Session) -> None:
        sessions = self.by_clinic.get(session.audience.clinic_id)
        if sessions is not None and session in sessions:
            sessions.discard(session)
            self.metrics.sessions.dec()

    def _is_duplicate(self, event_id: str, tp: TP, offset: int) -> bool:
        first = self.first_seen.get(event_id)
        return first is not None and first != (tp, offset)

    def ingest(self, records: Iterable[RawRecord]) -> None:
        """Records in delivery order; each goes to the sessions of its clinic."""
        for rec in records:
            if rec.offset < self.position.get(rec.tp, 0):
                continue  # already processed (a re-fetch after an error)
            self.position[rec.tp] = rec.offset + 1
            routed = route(rec.value)
            if routed is None or self._is_duplicate(routed.event_id, rec.tp, rec.offset):
                continue
            self.first_seen[routed.event_id] = (rec.tp, rec.offset)
            if len(self.first_seen) > DEDUP_MEMORY:
                self.first_seen.popitem(last=False)
            pos = dict(self.position)
            entry = Entry(rec.tp, rec.offset, rec.timestamp, routed, pos, render(routed, pos))
            self._remember(entry)
            for session in list(self.by_clinic.get(routed.clinic_id, ())):
                session.offer(entry)

    def _remember(self, entry: Entry) -> None:
        hist = self.history[entry.tp]
        hist.append(entry)
        if len(hist) > self.history_limit:
            dropped = hist.popleft()
            self.history_floor[entry.tp] = dropped.offset + 1

    async def resume(self, session: Session, raw_cursor: str) -> None:
        """Replay [cursor, now) filtered for this session, then hand over to live, in order.

        The hand-over has no gap and no duplicate: `end` is taken while the session is still
        holding live messages, so everything before `end` comes from the replay and everything
        after it from the held live messages. Raises CursorError for a cursor that is not ours.
        """
        start = cursor.decode(raw_cursor)
        session.replaying = True
        end = dict(self.position)
        session.floor = cursor.maximum(start, end)
        lists: list[list[Entry]] = []
        from_kafka: dict[TP, tuple[int, int]] = {}
        for tp, stop in end.items():
            first = start.get(tp, 0)
            if first >= stop:
                continue
            if first >= self.history_floor.get(tp, stop):
                lists.append([e for e in self.history[tp] if first <= e.offset < stop])
            else:
                from_kafka[tp] = (first, stop)
        if from_kafka:
            async with self.replay_slots:
                fetched = await self.read_range(from_kafka)
            lists.extend([self._replay_entry(r) for r in recs] for recs in fetched.values())
        self.metrics.replays.labels(source="kafka" if from_kafka else "memory").inc()
        sent = await self._replay(session, start, lists)
        session.release(frozenset(sent))

    def _replay_entry(self, rec: RawRecord) -> Entry:
        routed = route(rec.value)
        if routed is not None and self._is_duplicate(routed.event_id, rec.tp, rec.offset):
            routed = None
        return Entry(rec.tp, rec.offset, rec.timestamp, routed, {})

    async def _replay(
        self, session: Session, start: Position, lists: list[list[Entry]]
    ) -> set[str]:
        # Merging by timestamp keeps each partition's own order (only list heads are compared).
        pos = dict(start)
        sent: set[str] = set()
        for entry in heapq.merge(*lists, key=lambda e: e.timestamp):
            pos[entry.tp] = max(pos.get(entry.tp, 0), entry.offset + 1)
            r = entry.routed
            if r is None or r.event_id in sent or not delivers(session.audience, r):
                continue
            if session.closed:
                break
            sent.add(r.event_id)
            await session.put_replayed(render(r, pos), r.body["type"])
        return sent

    def consumer_lag(self, highwater: dict[TP, int]) -> int:
        return sum(max(0, hw - self.position.get(tp, 0)) for tp, hw in highwater.items())
