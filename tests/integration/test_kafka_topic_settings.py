"""Topics are made as KAFKA_TOPIC_PARTITIONS / KAFKA_REPLICATION_FACTOR / KAFKA_MIN_INSYNC_REPLICAS
say; an existing topic made otherwise fails loudly; the producers write with acks=all and
idempotence (real broker)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from services.bpjs_sync_worker.config import WorkerSettings
from services.bpjs_sync_worker.fetching import FETCH_MIN_BYTES
from services.bpjs_sync_worker.worker import create_worker, wait_for_topics
from shared.config import EXIT_CONFIG
from shared.kafka import KafkaConfig, TopicMismatch, TopicSpec, ensure_topics, make_admin
from shared.topics import TOPICS
from tests.fixtures.api import api_env
from tests.fixtures.infra import REPO, Infra, delete_topics

pytestmark = pytest.mark.integration


@pytest.fixture
async def fresh_prefix(infra: Infra):
    """A prefix with no topics yet (the `topic_prefix` fixture creates them)."""
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    yield prefix
    await delete_topics(infra.kafka, prefix)


async def _describe(kafka: KafkaConfig, topic: str) -> tuple[int, int, str, bool]:
    """partitions, replication, min.insync.replicas and whether it was set on the topic."""
    admin = make_admin(kafka)
    await admin.start()
    try:
        [meta] = await admin.describe_topics([topic])
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"min.insync.replicas": None})]
        )
    finally:
        await admin.close()
    [(_, _, _, _, entries, *_)] = response.resources
    [(_, value, _, source, *_)] = [e for e in entries if e[0] == "min.insync.replicas"]
    replication = len(meta["partitions"][0]["replicas"])
    # config_source 1: DYNAMIC_TOPIC_CONFIG (set on the topic, not the broker's default)
    return len(meta["partitions"]), replication, value, source == 1


async def _create_raw(kafka: KafkaConfig, topic: str, partitions: int, **configs: str) -> None:
    admin = make_admin(kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs)])
    finally:
        await admin.close()


def _topics_cli(infra: Infra, prefix: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.topics"],
        cwd=REPO,
        env={
            **os.environ,
            "APP_ENV": "test",
            **infra.kafka.env(),
            "KAFKA_TOPIC_PREFIX": prefix,
            "WORKER_CONSUMER_GROUP": f"{prefix}worker",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_topics_are_created_with_the_configured_partitions_and_min_insync_replicas(
    infra, fresh_prefix
):
    topic = f"{fresh_prefix}queue-cancelled"
    await ensure_topics(infra.kafka, [topic], TopicSpec(partitions=3))
    assert await _describe(infra.kafka, topic) == (3, 1, "1", True)


async def test_the_topics_command_creates_every_topic_from_the_settings(infra, fresh_prefix):
    done = _topics_cli(infra, fresh_prefix, KAFKA_TOPIC_PARTITIONS="2")
    assert done.returncode == 0, done.stderr
    assert "partitions=2 replication=1 min.insync.replicas=1" in done.stdout
    for t in TOPICS:
        assert await _describe(infra.kafka, f"{fresh_prefix}{t}") == (2, 1, "1", True)
    again = _topics_cli(infra, fresh_prefix, KAFKA_TOPIC_PARTITIONS="2")
    assert again.returncode == 0, again.stderr


async def test_an_existing_topic_with_other_partitions_is_a_mismatch(infra, fresh_prefix):
    topic = f"{fresh_prefix}queue-cancelled"
    await _create_raw(infra.kafka, topic, 1, **{"min.insync.replicas": "1"})
    with pytest.raises(TopicMismatch) as caught:
        await ensure_topics(infra.kafka, [topic], TopicSpec(partitions=4))
    assert str(caught.value) == (
        f"Kafka topic {topic}: wanted partitions=4 replication=1 min.insync.replicas=1,"
        " found partitions=1 replication=1 min.insync.replicas=1"
    )


async def test_an_existing_topic_with_other_min_insync_replicas_is_a_mismatch(infra, fresh_prefix):
    topic = f"{fresh_prefix}queue-cancelled"
    await _create_raw(infra.kafka, topic, 4, **{"min.insync.replicas": "2"})
    with pytest.raises(TopicMismatch, match=r"wanted .*min\.insync\.replicas=1, found .*=2$"):
        await ensure_topics(infra.kafka, [topic], TopicSpec())


async def test_the_topics_command_exits_non_zero_with_one_line_naming_a_mismatched_topic(
    infra, fresh_prefix
):
    topic = f"{fresh_prefix}bpjs-synced"
    await _create_raw(infra.kafka, topic, 1)
    done = _topics_cli(infra, fresh_prefix)
    assert done.returncode == EXIT_CONFIG
    assert done.stderr.strip().splitlines() == [
        f"topics: Kafka topic {topic}: wanted partitions=4 replication=1 min.insync.replicas=1,"
        " found partitions=1 replication=1 min.insync.replicas=1"
    ]


def test_min_insync_replicas_above_the_replication_factor_refuses_to_start(infra):
    done = _topics_cli(
        infra, "unused-", KAFKA_REPLICATION_FACTOR="2", KAFKA_MIN_INSYNC_REPLICAS="3"
    )
    assert done.returncode == EXIT_CONFIG
    assert "KAFKA_MIN_INSYNC_REPLICAS (3) must not exceed KAFKA_REPLICATION_FACTOR (2)" in (
        done.stderr
    )


def _worker_settings(infra: Infra, database: str, prefix: str, **extra: str) -> WorkerSettings:
    env = api_env(database, infra.kafka_for("worker"), prefix, **extra)
    return WorkerSettings(**env)  # type: ignore[arg-type]


async def test_the_worker_only_verifies_topics_and_refuses_other_partitions(
    infra, database, topic_prefix
):
    settings = _worker_settings(infra, database, topic_prefix)
    await wait_for_topics(settings)  # made as the settings say: it returns
    other = _worker_settings(infra, database, topic_prefix, KAFKA_TOPIC_PARTITIONS="8")
    with pytest.raises(
        TopicMismatch, match=r"wanted partitions=8 replication=1, found partitions=4"
    ):
        await wait_for_topics(other)


async def test_the_relay_and_worker_producers_use_acks_all_with_idempotence(
    infra, database, topic_prefix
):
    from shared.kafka import make_producer

    relay = make_producer(infra.kafka_for("api"), client_id="outbox-relay")
    app = create_worker(_worker_settings(infra, database, topic_prefix))
    faust_producer = app.producer._new_producer()  # the aiokafka producer faust would start
    for producer in (relay, faust_producer):
        assert producer._txn_manager is not None  # idempotence on
        assert producer._sender._acks == -1  # acks=all
        await producer.stop()


@pytest.mark.parametrize(
    ("wait_ms", "fetcher_gets"), [("100", (100, FETCH_MIN_BYTES)), ("0", (1500, 1))]
)
async def test_the_worker_consumer_fetches_wait_as_configured(
    infra, database, topic_prefix, wait_ms, fetcher_gets
):
    """WORKER_FETCH_WAIT_MS reaches the fetcher of the consumer faust would start; 0 leaves
    faust's own (answered as soon as one record is there)."""
    settings = _worker_settings(infra, database, topic_prefix, WORKER_FETCH_WAIT_MS=wait_ms)
    app = create_worker(settings)
    consumer = app.consumer._new_consumer_thread()._create_worker_consumer(app.transport)
    await consumer.start()  # on the real broker: aiokafka builds its fetcher here
    try:
        fetcher = consumer._fetcher
        assert (fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes) == fetcher_gets
    finally:
        await consumer.stop()
