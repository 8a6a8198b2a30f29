"""The worker's consumer-lag gauge against a real broker, under the worker's own principal."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from services.bpjs_sync_worker.consumer_lag import ConsumerLag, lag_of
from shared.kafka import make_consumer, make_producer
from tests.fixtures.infra import require_acls

pytestmark = pytest.mark.integration


def test_a_partition_the_group_never_committed_counts_from_its_beginning():
    a0, a1, b0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)
    ends = {a0: 10, a1: 7, b0: 3}
    assert lag_of(ends, {a0: 4, a1: -1, b0: 3}, {a1: 2}) == {"a": 6 + 5, "b": 0}
    assert lag_of(ends, {}, {}) == {"a": 17, "b": 3}


async def test_lag_is_what_the_group_has_not_committed_on_each_topic(infra, topic_prefix):
    topic, group = f"{topic_prefix}queue-cancelled", f"{topic_prefix}worker"
    producer = make_producer(infra.kafka)
    await producer.start()
    try:
        for _ in range(5):
            await producer.send_and_wait(topic, b"x", key=b"k", partition=0)
        await producer.send_and_wait(topic, b"y", key=b"k", partition=1)
    finally:
        await producer.stop()
    lag = ConsumerLag(infra.kafka_for("worker"), group, [topic], interval_s=0.1)
    try:
        assert await lag.measure() == {topic: 6}, "no commit yet: all of it"
        consumer = make_consumer(infra.kafka_for("worker"), group_id=group)
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, 0)])
            await consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(2, "")})
        finally:
            await consumer.stop()
        assert await lag.measure() == {topic: 3 + 1}
    finally:
        await lag.close()


async def test_a_topic_the_principal_may_not_read_is_an_error_not_a_zero(infra, topic_prefix):
    require_acls(infra.access)
    lag = ConsumerLag(
        infra.kafka_for("worker"), f"{topic_prefix}worker", [f"{topic_prefix}nope"], 0.1
    )
    try:
        with pytest.raises(LookupError):
            await lag.measure()
    finally:
        await lag.close()
