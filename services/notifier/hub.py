"""The hub: the hub's Kafka position, dedup, recent history, sessions by clinic, and resumes."""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable

import structlog

from services.notifier import cursor
from services.notifier.connection import Flusher
from services.notifier.cursor import TP, CursorError, Position
from services.notifier.messages import Routed, delivers, to_message
from services.notifier.metrics import NotifierMetrics
from services.notifier.session import Entry, Session, render
from shared import tracing
from shared.events import decode_event
from shared.events.envelope import UnknownEventError
from shared.logging import get_logger

log = get_logger(__name__)

DEDUP_MEMORY = 200_000  # event ids remembered to drop duplicated deliveries
YIELD_EVERY = 256  # replayed entries between two yields to the loop: live delivery goes on


class RawRecord:
    """A Kafka record reduced to what the hub needs (logical topic name, offset, value)."""

    __slots__ = ("offset", "timestamp", "tp", "value")

    def __init__(self, tp: TP, offset: int, timestamp: int, value: bytes | None) -> None:
        self.tp, self.offset, self.timestamp, self.value = tp, offset, timestamp, value


Convert = Callable[["RawRecord"], Entry | None]
ReadRange = Callable[[dict[TP, tuple[int, int]], Convert], Awaitable[dict[TP, list[Entry]]]]


class Resync(Exception):
    """The cursor is not replayed (empty, malformed, too old or too much): the client refetches."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def skip_reason(exc: Exception) -> str:
    """A short metric label for an event that could not be decoded or validated."""
    text = str(exc)
    if isinstance(exc, UnknownEventError):
        if text.startswith("not JSON"):
            return "not_json"
        if text.startswith("unknown event type"):
            return "unknown_type"
        if "version" in text:
            return "bad_version"
    return "invalid"


def route(value: bytes | None) -> Routed | None:
    """The message of one Kafka record value (None: not for the UI); raises when not understood."""
    if value is None:
        raise UnknownEventError("empty record")
    return to_message(decode_event(value))


class Hub:
    def __init__(
        self,
        metrics: NotifierMetrics,
        read_range: ReadRange,
        *,
        history_per_partition: int,
        replay_concurrency: int,
        replay_window_s: float = 86400.0,
        max_replay_records: int = 10000,
        flusher: Flusher | None = None,
    ) -> None:
        self.metrics = metrics
        self.flusher = flusher or Flusher()  # the one the sessions' sockets mark
        self.read_range = read_range
        self.replay_window_s = replay_window_s
        self.max_replay_records = max_replay_records
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

    def _route(self, rec: RawRecord) -> Routed | None:
        """Skip (count, log) a record that cannot be decoded or validated: the partition goes on."""
        try:
            return route(rec.value)
        except Exception as exc:  # whatever a record holds, it must not stop the live reader
            reason = "empty" if rec.value is None else skip_reason(exc)
            self.metrics.skipped.labels(reason=reason).inc()
            log.warning(
                "event_skipped",
                reason=reason,
                topic=rec.tp[0],
                partition=rec.tp[1],
                offset=rec.offset,
                error=str(exc)[:300],
            )
            return None

    def ingest(self, records: Iterable[RawRecord]) -> None:
        """Records in delivery order; each goes to the sessions of its clinic. What the batch
        produced is written at its end (and on the way, past the flusher's budget)."""
        flusher = self.flusher
        flush_at = time.monotonic() + flusher.budget_s
        for rec in records:
            if rec.offset < self.position.get(rec.tp, 0):
                continue  # already processed (a re-fetch after an error)
            self.position[rec.tp] = rec.offset + 1
            routed = self._route(rec)
            if routed is None or self._is_duplicate(routed.event_id, rec.tp, rec.offset):
                continue
            self.first_seen[routed.event_id] = (rec.tp, rec.offset)
            if len(self.first_seen) > DEDUP_MEMORY:
                self.first_seen.popitem(last=False)
            pos = dict(self.position)
            entry = Entry(rec.tp, rec.offset, rec.timestamp, routed, pos, render(routed, pos))
            self._remember(entry)
            self._push(entry, routed)
            if time.monotonic() >= flush_at:
                flusher.run()
                flush_at = time.monotonic() + flusher.budget_s
        flusher.run()

    def _push(self, entry: Entry, routed: Routed) -> None:
        """Offer a live message to its clinic's sessions, as a span of the event's trace."""
        sessions = list(self.by_clinic.get(routed.clinic_id, ()))
        kind, queue_id = routed.body["type"], routed.body["queue_id"]
        with (
            tracing.span(
                f"push {kind}",
                parent=routed.traceparent,
                kind=tracing.SpanKind.CONSUMER,
                attributes={"queue_id": queue_id, "messaging.message.id": routed.event_id},
            ) as span,
            structlog.contextvars.bound_contextvars(queue_id=queue_id),
        ):
            for session in sessions:
                session.offer(entry)
            span.set(sessions=len(sessions))
            log.info("event_pushed", type=kind, event_id=routed.event_id, sessions=len(sessions))

    def _remember(self, entry: Entry) -> None:
        hist = self.history[entry.tp]
        hist.append(entry)
        if len(hist) > self.history_limit:
            dropped = hist.popleft()
            self.history_floor[entry.tp] = dropped.offset + 1

    async def resume(self, session: Session, raw_cursor: object) -> None:
        """Replay [cursor, now) filtered for this session, then hand over to live, in order.

        The hand-over has no gap and no duplicate: `end` is taken while the session is still
        holding live messages, so everything before `end` comes from the replay and everything
        after it from the held live messages. Raises Resync instead of replaying a cursor that
        is empty or malformed, whose first missed record is older than the replay window, or
        that missed more than `max_replay_records` records: one replay reads at most that many
        records, keeps only its clinic's, and at most `replay_concurrency` read Kafka at once.
        """
        start = _decode(raw_cursor)
        end = dict(self.position)
        if not start.keys() & end.keys():
            raise Resync("empty")  # names none of the partitions this notifier reads
        ranges = {tp: (start.get(tp, 0), stop) for tp, stop in end.items()}
        ranges = {tp: rng for tp, rng in ranges.items() if rng[0] < rng[1]}
        # A cursor far ahead of this instance was not made by a notifier (its offsets would
        # keep this session's live messages back as already seen).
        if sum(max(0, start[tp] - stop) for tp, stop in end.items() if tp in start) > (
            self.max_replay_records
        ):
            raise Resync("malformed")
        if sum(stop - first for first, stop in ranges.values()) > self.max_replay_records:
            raise Resync("too_many")
        cutoff = int((time.time() - self.replay_window_s) * 1000)
        clinic = session.audience.clinic_id
        lists: list[list[Entry]] = []
        from_kafka: dict[TP, tuple[int, int]] = {}
        for tp, (first, stop) in ranges.items():
            if first < self.history_floor.get(tp, stop):
                from_kafka[tp] = (first, stop)
                continue
            missed = [e for e in self.history[tp] if first <= e.offset < stop]
            if missed and missed[0].timestamp < cutoff:
                raise Resync("too_old")
            lists.append([e for e in missed if e.routed and e.routed.clinic_id == clinic])
        if from_kafka:
            async with self.replay_slots:
                fetched = await self.read_range(from_kafka, self._converter(clinic, cutoff))
            lists.extend(fetched.values())
        self.metrics.replays.labels(source="kafka" if from_kafka else "memory").inc()
        sent = await self._replay(session, start, lists)
        session.floor = cursor.maximum(start, end)
        session.release(frozenset(sent))

    def _converter(self, clinic: str, cutoff: int) -> Convert:
        """What a Kafka replay keeps of each record: this clinic's messages, nothing else."""
        checked: set[TP] = set()

        def convert(rec: RawRecord) -> Entry | None:
            if rec.tp not in checked:  # the oldest record this client missed in the partition
                checked.add(rec.tp)
                if rec.timestamp < cutoff:
                    raise Resync("too_old")
            try:
                routed = route(rec.value)
            except Exception:  # counted and logged when the live reader met it
                return None
            if routed is None or routed.clinic_id != clinic:
                return None
            if self._is_duplicate(routed.event_id, rec.tp, rec.offset):
                return None
            return Entry(rec.tp, rec.offset, rec.timestamp, routed, {})

        return convert

    async def _replay(
        self, session: Session, start: Position, lists: list[list[Entry]]
    ) -> set[str]:
        # Merging by timestamp keeps each partition's own order (only list heads are compared).
        pos = dict(start)
        sent: set[str] = set()
        for n, entry in enumerate(heapq.merge(*lists, key=lambda e: e.timestamp), 1):
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            pos[entry.tp] = max(pos.get(entry.tp, 0), entry.offset + 1)
            r = entry.routed
            if r is None or r.event_id in sent or not delivers(session.audience, r):
                continue
            if session.closed:
                break
            sent.add(r.event_id)
            await session.put_replayed(render(r, pos), r.body["type"])
        return sent

    def consumer_lag(self, ends: dict[TP, int]) -> int:
        """Records between what this hub has read and the partitions' `ends`."""
        return sum(max(0, end - self.position.get(tp, 0)) for tp, end in ends.items())


def _decode(raw_cursor: object) -> Position:
    if raw_cursor is None or raw_cursor == "":
        raise Resync("empty")
    if not isinstance(raw_cursor, str):
        raise Resync("malformed")
    try:
        start = cursor.decode(raw_cursor)
    except CursorError as exc:
        raise Resync("malformed") from exc
    return start
