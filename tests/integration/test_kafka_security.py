"""Kafka authentication and ACLs: who may connect, who may write where, what each relay sends."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError

from shared.kafka import KafkaConfig, make_admin, make_producer
from shared.outbox import OutboxRelay
from tests.fixtures.infra import require_acls, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def secured(infra):
    """The broker under test enforces SASL and ACLs."""
    require_acls(infra.access)
    return infra


async def _connects(kafka: KafkaConfig) -> bool:
    producer = AIOKafkaProducer(**kafka.client_kwargs(), request_timeout_ms=5000)
    try:
        await producer.start()
        return True
    except KafkaConnectionError:
        return False
    finally:
        await producer.stop()


async def _produce(kafka: KafkaConfig, topic: str) -> None:
    producer = AIOKafkaProducer(**kafka.client_kwargs(), request_timeout_ms=5000)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}", key=b"1")
    finally:
        await producer.stop()


async def test_a_client_without_credentials_or_with_a_wrong_password_is_refused(secured):
    plaintext = KafkaConfig(secured.kafka.bootstrap)
    wrong = secured.kafka.as_user(secured.kafka.username, "not-the-password")
    assert not await _connects(plaintext)
    assert not await _connects(wrong)
    assert await _connects(secured.kafka)


async def test_the_controller_port_refuses_a_client_without_credentials(private_kafka):
    controller = KafkaConfig(f"127.0.0.1:{private_kafka.controller_port}")
    assert not await _connects(controller)
    assert await _connects(private_kafka.kafka)


async def test_the_notifier_principal_cannot_produce_to_queue_cancelled(secured, topic_prefix):
    with pytest.raises(TopicAuthorizationFailedError):
        await _produce(secured.kafka_for("notifier"), f"{topic_prefix}queue-cancelled")


async def test_the_worker_principal_cannot_produce_to_queue_cancelled(secured, topic_prefix):
    with pytest.raises(TopicAuthorizationFailedError):
        await _produce(secured.kafka_for("worker"), f"{topic_prefix}queue-cancelled")


async def test_the_api_principal_writes_queue_cancelled_and_nothing_else(secured, topic_prefix):
    api = secured.kafka_for("api")
    producer = make_producer(api)  # idempotent, as the relay's
    await producer.start()
    try:
        await producer.send_and_wait(f"{topic_prefix}queue-cancelled", b"{}", key=b"1")
    finally:
        await producer.stop()
    for topic in ("bpjs-synced", "bpjs-sync-failed"):
        with pytest.raises(TopicAuthorizationFailedError):
            await _produce(api, f"{topic_prefix}{topic}")


async def _end_offsets(kafka: KafkaConfig, topic: str) -> int:
    """Records ever written to `topic` (sum of its partitions' end offsets)."""
    admin = make_admin(kafka)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    consumer = AIOKafkaConsumer(**kafka.client_kwargs(), group_id=None)
    await consumer.start()
    try:
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


async def test_each_relay_publishes_only_its_own_services_topics(secured, db, topic_prefix):
    names = ("queue-cancelled", "bpjs-synced", "bpjs-sync-failed")
    cancelled, synced, failed = (f"{topic_prefix}{t}" for t in names)

    async def add(topic: str) -> None:
        await db.execute(
            "insert into outbox (event_id, topic, kafka_key, event_type, payload)"
            " values ($1, $2, '1', 'Test', '{}')",
            uuid.uuid4(),
            topic,
        )

    async def unpublished() -> list[str]:
        rows = await db.fetch("select topic from outbox where published_at is null order by id")
        return [r["topic"] for r in rows]

    for topic in (cancelled, synced, failed):
        await add(topic)
    await _run_relay(db, secured.kafka_for("api"), [cancelled], unpublished)
    assert await unpublished() == [synced, failed]
    assert await _end_offsets(secured.kafka, synced) == 0
    assert await _end_offsets(secured.kafka, failed) == 0

    await add(cancelled)
    await _run_relay(db, secured.kafka_for("worker"), [synced, failed], unpublished)
    assert await unpublished() == [cancelled]
    for topic in (cancelled, synced, failed):
        assert await _end_offsets(secured.kafka, topic) == 1


async def _run_relay(db, kafka: KafkaConfig, topics: list[str], unpublished) -> None:
    relay = OutboxRelay(db, kafka, topics=topics, poll_interval_s=0.05, max_backoff_s=0.5)
    task = asyncio.create_task(relay.run())
    try:
        await wait_until(
            lambda: _none_of(unpublished, topics), timeout=30, what=f"relay published {topics}"
        )
        # The relay reports Kafka healthy once its publishing pass returns, which can be just
        # after the rows it marked are visible: wait for it rather than read it at once.
        await wait_until(lambda: relay.kafka_ok, timeout=5, what="relay reports Kafka ok")
    finally:
        relay.stop()
        await task


async def _none_of(unpublished, topics: list[str]) -> bool:
    return not set(await unpublished()) & set(topics)
