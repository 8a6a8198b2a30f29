"""Kafka helpers: an idempotent producer, consumers, topic creation and event (de)serialising."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.events import CloudEvent, encode_event


def make_producer(
    bootstrap: str, *, linger_ms: int = 2, client_id: str = "antrean"
) -> AIOKafkaProducer:
    """Idempotent producer (acks=all, no duplicates on internal retries, order kept per key)."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        enable_idempotence=True,
        linger_ms=linger_ms,
        request_timeout_ms=15000,
        retry_backoff_ms=200,
    )


def make_consumer(
    bootstrap: str,
    *topics: str,
    group_id: str | None,
    auto_offset_reset: str = "earliest",
    enable_auto_commit: bool = False,
    fetch_max_wait_ms: int = 20,
) -> AIOKafkaConsumer:
    # A low fetch_max_wait_ms: the default 500 ms would add latency to every idle fetch.
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        auto_offset_reset=auto_offset_reset,
        enable_auto_commit=enable_auto_commit,
        fetch_max_wait_ms=fetch_max_wait_ms,
        isolation_level="read_committed",
    )


async def send_event(producer: AIOKafkaProducer, topic: str, event: CloudEvent) -> None:
    """Publish one event keyed by its queue id and wait for the broker's acknowledgement."""
    key = str(event.data["queue_id"]).encode()
    await producer.send_and_wait(topic, encode_event(event), key=key)


async def ensure_topics(bootstrap: str, topics: Iterable[str], *, partitions: int = 4) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name=t, num_partitions=partitions, replication_factor=1)
            for t in topics
            if t not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass  # another process created it meanwhile
    finally:
        await admin.close()


async def kafka_reachable(bootstrap: str, timeout_ms: int = 3000) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    try:
        await admin.start()
        await admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        await admin.close()
