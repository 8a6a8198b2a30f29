"""Proof that the outbox relay's producer writes with acks=all: on a topic whose writes need all
three copies, its write waits while a node is down (an acks=1 write does not) and lands exactly
once when the node is back."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic

from shared.kafka import KafkaConfig, make_admin, make_producer

RELAY_VALUE = b"relay-producer"


class AcksProbe:
    def __init__(self, kafka: KafkaConfig, topic: str) -> None:
        self.kafka, self.topic = kafka, topic
        self.relay = make_producer(kafka, client_id="outbox-relay")  # as shared.outbox builds it
        self.acks_one = AIOKafkaProducer(**kafka.client_kwargs(), acks=1)

    async def create(self) -> None:
        admin = make_admin(self.kafka)
        await admin.start()
        try:
            config = {"min.insync.replicas": "3"}
            await admin.create_topics([NewTopic(self.topic, 1, 3, topic_configs=config)])
        finally:
            await admin.close()
        await self.relay.start()
        await self.acks_one.start()

    async def write_while_a_node_is_down(self) -> asyncio.Task[object]:
        """Start the relay producer's write; two acks=1 writes to the same partition complete
        after it was sent while it is still waiting for the third copy."""
        pending = asyncio.create_task(self.relay.send_and_wait(self.topic, RELAY_VALUE))
        for _ in range(2):
            await asyncio.wait_for(self.acks_one.send_and_wait(self.topic, b"acks-1"), 60)
        assert not pending.done(), "the relay's write was acknowledged without every copy"
        return pending

    async def written_once(self, pending: asyncio.Task[object]) -> None:
        """Once the node is back, the waiting write completes, and is in the log once."""
        await asyncio.wait_for(pending, 90)
        tp = TopicPartition(self.topic, 0)
        consumer = AIOKafkaConsumer(**self.kafka.client_kwargs(), auto_offset_reset="earliest")
        await consumer.start()
        try:
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            values: list[bytes | None] = []
            while len(values) < end:
                batch = await asyncio.wait_for(consumer.getmany(tp, timeout_ms=1000), 30)
                values += [r.value for r in batch.get(tp, [])]
        finally:
            await consumer.stop()
        assert values.count(RELAY_VALUE) == 1, values

    async def close(self) -> None:
        # A write still waiting (a failed run) would hold stop() forever: bounded.
        for producer in (self.relay, self.acks_one):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(producer.stop(), 15)
