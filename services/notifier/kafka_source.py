"""Kafka side of the notifier: a live reader of every partition, and ranged reads for resumes.

Every instance reads every partition itself (`group_id=None`, manual `assign()`), so several
notifiers behind a load balancer each deliver to their own sessions; nothing is committed.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from services.notifier.config import NotifierSettings
from services.notifier.cursor import TP, Position
from services.notifier.hub import Convert, RawRecord
from services.notifier.session import Entry
from shared.events import TOPIC_BPJS_SYNC_FAILED, TOPIC_BPJS_SYNCED, TOPIC_QUEUE_CANCELLED
from shared.kafka import KafkaConfig, make_admin, make_consumer
from shared.logging import get_logger

log = get_logger(__name__)

LOGICAL_TOPICS = (TOPIC_QUEUE_CANCELLED, TOPIC_BPJS_SYNCED, TOPIC_BPJS_SYNC_FAILED)
REPLAY_BATCH = 500  # records converted between two awaits of a replay read


class KafkaSource:
    def __init__(self, settings: NotifierSettings) -> None:
        self._kafka = KafkaConfig.from_settings(settings)
        self._real = {lt: settings.topic(lt) for lt in LOGICAL_TOPICS}
        self._logical = {real: lt for lt, real in self._real.items()}
        self._consumer: AIOKafkaConsumer | None = None
        self.running = False

    def _consumer_for(self) -> AIOKafkaConsumer:
        return make_consumer(self._kafka, group_id=None, fetch_max_wait_ms=10)

    def _tp(self, tp: TopicPartition) -> TP:
        return (self._logical[tp.topic], tp.partition)

    def _real_tp(self, tp: TP) -> TopicPartition:
        return TopicPartition(self._real[tp[0]], tp[1])

    async def _partitions(self) -> list[TopicPartition]:
        """Every partition of the three topics (waits until the topics exist)."""
        admin = make_admin(self._kafka)
        await admin.start()
        try:
            while True:
                described = await admin.describe_topics(list(self._real.values()))
                found = [
                    TopicPartition(t["topic"], p["partition"])
                    for t in described
                    for p in t["partitions"]
                ]
                if all(t["error_code"] == 0 and t["partitions"] for t in described):
                    return sorted(found)
                log.warning("topics_missing", topics=list(self._real.values()))
                await asyncio.sleep(1)
        finally:
            await admin.close()

    async def start(self) -> Position:
        """Assign every partition at its end; returns that position."""
        tps = await self._partitions()
        consumer = self._consumer_for()
        await consumer.start()
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        self._consumer = consumer
        return {self._tp(tp): await consumer.position(tp) for tp in tps}

    async def run(self, ingest: Callable[[list[RawRecord]], None]) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        self.running = True
        try:
            while True:
                try:
                    batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # keep reading after broker hiccups
                    self.running = False
                    log.warning("kafka_fetch_failed", error=repr(exc))
                    await asyncio.sleep(1)
                    continue
                self.running = True
                if batch:
                    ingest(self._merge(batch))
        finally:
            self.running = False

    async def end_offsets(self) -> dict[TP, int]:
        """Each assigned partition's end, asked of the broker now (ListOffsets). The high
        watermark of the last fetch would not do for the lag: read right after that fetch's
        records are handled, it never counts what arrived meanwhile."""
        if self._consumer is None:
            return {}
        ends = await self._consumer.end_offsets(list(self._consumer.assignment()))
        return {self._tp(tp): offset for tp, offset in ends.items()}

    def _merge(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> list[RawRecord]:
        # Oldest first across partitions; each partition keeps its own order.
        lists = [
            [RawRecord(self._tp(tp), r.offset, r.timestamp, r.value) for r in recs]
            for tp, recs in batch.items()
        ]
        return list(heapq.merge(*lists, key=lambda r: r.timestamp))

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def read_range(
        self, ranges: dict[TP, tuple[int, int]], convert: Convert, timeout_s: float = 30.0
    ) -> dict[TP, list[Entry]]:
        """`convert` of records [first, stop) of each partition, from a consumer of its own.

        Records are converted as they arrive, in small batches, so a replay holds only what it
        keeps and never blocks live delivery for long; an exception of `convert` ends the read.
        """
        consumer = self._consumer_for()
        await consumer.start()
        out: dict[TP, list[Entry]] = {tp: [] for tp in ranges}
        try:
            real = {self._real_tp(tp): rng for tp, rng in ranges.items()}
            consumer.assign(list(real))
            for tp, (first, _) in real.items():
                consumer.seek(tp, first)
            pending = set(real)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while pending and loop.time() < deadline:
                batch = await consumer.getmany(*pending, timeout_ms=200, max_records=REPLAY_BATCH)
                for tp, recs in batch.items():
                    stop, logical = real[tp][1], self._tp(tp)
                    kept = out[logical]
                    for r in recs:
                        if r.offset < stop:
                            entry = convert(RawRecord(logical, r.offset, r.timestamp, r.value))
                            if entry is not None:
                                kept.append(entry)
                for tp in list(pending):
                    if await consumer.position(tp) >= real[tp][1]:
                        pending.discard(tp)
            if pending:
                raise TimeoutError(f"replay could not read {len(pending)} partition(s) in time")
        finally:
            await consumer.stop()
        return out
