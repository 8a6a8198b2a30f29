"""Consumer lag of the worker's Kafka group: its committed offsets against each partition's end."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import Gauge

from shared.kafka import KafkaConfig, make_admin, make_consumer
from shared.logging import get_logger

log = get_logger(__name__)
LAG_INTERVAL_S = 15.0

CONSUMER_LAG = Gauge(
    "kafka_consumer_lag",
    "Records of a topic the consumer group has not committed yet (end offset minus committed"
    " offset, summed over the topic's partitions)",
    ["group", "topic"],
)


def lag_of(
    ends: dict[TopicPartition, int],
    committed: dict[TopicPartition, int],
    beginnings: dict[TopicPartition, int],
) -> dict[str, int]:
    """Per topic, the records between the group's position and the end. A partition the group
    has never committed is read from its beginning (the worker's `earliest` reset)."""
    lag: dict[str, int] = {}
    for tp, end in ends.items():
        position = committed.get(tp, -1)
        if position < 0:
            position = beginnings.get(tp, 0)
        lag[tp.topic] = lag.get(tp.topic, 0) + max(0, end - position)
    return lag


class ConsumerLag:
    """Measures the lag of `group` on `topics` every `interval_s` into `kafka_consumer_lag`.

    Two long-lived clients with no group of their own: an admin client reads the topics'
    partitions (Metadata) and the group's committed offsets (OffsetFetch), a consumer the
    partitions' end offsets (ListOffsets); so a measurement is a handful of small requests
    on connections kept open."""

    def __init__(
        self,
        kafka: KafkaConfig,
        group: str,
        topics: Sequence[str],
        interval_s: float = LAG_INTERVAL_S,
    ) -> None:
        self.kafka = kafka
        self.group = group
        self.topics = list(topics)
        self.interval_s = interval_s
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def measure(self) -> dict[str, int]:
        admin, consumer = await self._clients()
        partitions = [
            TopicPartition(topic, p)
            for topic in self.topics
            for p in await self._partitions(admin, topic)
        ]
        offsets = await admin.list_consumer_group_offsets(self.group, partitions=partitions)
        committed = {tp: meta.offset for tp, meta in offsets.items()}
        ends = await consumer.end_offsets(partitions)
        unknown = [tp for tp in partitions if committed.get(tp, -1) < 0]
        beginnings = await consumer.beginning_offsets(unknown) if unknown else {}
        lag = lag_of(ends, committed, beginnings)
        return {topic: lag.get(topic, 0) for topic in self.topics}

    async def run(self) -> None:
        """Until cancelled. While Kafka cannot be asked, the last values stay (readiness and
        the scrape's own `up` tell that Kafka or the worker is away)."""
        while True:
            try:
                for topic, lag in (await self.measure()).items():
                    CONSUMER_LAG.labels(self.group, topic).set(lag)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("consumer_lag_failed", group=self.group, error=repr(exc))
                await self.close()
            await asyncio.sleep(self.interval_s)

    async def close(self) -> None:
        admin, consumer = self._admin, self._consumer
        self._admin = self._consumer = None
        if admin is not None:
            await admin.close()
        if consumer is not None:
            await consumer.stop()

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None:
            admin = make_admin(self.kafka, request_timeout_ms=5000)
            await admin.start()
            self._admin = admin
        if self._consumer is None:
            consumer = make_consumer(self.kafka, group_id=None)
            await consumer.start()
            self._consumer = consumer
        return self._admin, self._consumer

    @staticmethod
    async def _partitions(admin: AIOKafkaAdminClient, topic: str) -> list[int]:
        [found] = await admin.describe_topics([topic])
        partitions = sorted(p["partition"] for p in found["partitions"])
        if found["error_code"] or not partitions:
            raise LookupError(f"topic {topic}: no partitions (missing, or not allowed)")
        return partitions
