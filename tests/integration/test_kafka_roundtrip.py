"""An event produced with the shared helper is consumed with the shared helper (real broker)."""

import asyncio
from datetime import UTC, datetime

import pytest

from shared.events import CancelledBy, QueueCancelledData, decode_event, new_event
from shared.kafka import make_consumer, make_producer, send_event

pytestmark = pytest.mark.integration


async def test_event_round_trip_through_the_real_broker(infra, topic_prefix):
    topic = f"{topic_prefix}queue-cancelled"
    data = QueueCancelledData(
        queue_id=42,
        clinic_id="K1",
        room_id="R1",
        ticket_number="R-042",
        payer="UMUM",
        bpjs=None,
        reason_code="other",
        reason_text="tes",
        cancelled_by=CancelledBy(user_id="u", name="n"),
        cancelled_at=datetime.now(UTC),
    )
    event = new_event(data, source="/test")
    producer = make_producer(infra.kafka)
    consumer = make_consumer(infra.kafka, topic, group_id=f"{topic_prefix}g")
    await producer.start()
    await consumer.start()
    try:
        await send_event(producer, topic, event)
        msg = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await producer.stop()
        await consumer.stop()
    assert msg.key == b"42"
    assert decode_event(msg.value) == event
