"""The notifier's `notifier_consumer_lag` against real Kafka: records it has not read yet count."""

from __future__ import annotations

import asyncio

import pytest

from services.notifier.app import Notifier
from services.notifier.config import NotifierSettings
from shared.events import TOPIC_QUEUE_CANCELLED
from shared.kafka import make_producer, send_event
from tests.fixtures.api import notifier_env
from tests.fixtures.infra import free_port, wait_until
from tests.integration.test_notifier import cancelled

pytestmark = pytest.mark.integration


async def test_the_lag_gauge_counts_records_the_notifier_has_not_read_yet(
    infra, topic_prefix, monkeypatch
):
    env = notifier_env(infra.kafka_for("notifier"), topic_prefix, free_port())
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    notifier = Notifier(NotifierSettings())

    def gauge() -> float | None:
        return notifier.metrics.registry.get_sample_value("notifier_consumer_lag")

    # At the end of every partition, and nothing read since: a notifier that fell behind.
    notifier.hub.start(await notifier.source.start())
    reader: asyncio.Task[None] | None = None
    producer = make_producer(infra.kafka, linger_ms=0)
    await producer.start()
    try:
        for _ in range(30):
            await send_event(producer, f"{topic_prefix}{TOPIC_QUEUE_CANCELLED}", cancelled())
        await notifier.measure_lag()
        assert gauge() == 30

        reader = asyncio.create_task(notifier.source.run(notifier.hub.ingest))

        async def caught_up() -> bool:
            await notifier.measure_lag()
            return gauge() == 0

        await wait_until(caught_up, timeout=20, what="the lag back to 0 once everything is read")
    finally:
        await producer.stop()
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        await notifier.source.stop()
