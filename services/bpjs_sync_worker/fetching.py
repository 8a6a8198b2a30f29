"""faust's Kafka consumer with fetches that wait a little for more records.

faust's aiokafka driver asks the broker for records with `fetch_min_bytes` 1: every fetch is
answered as soon as one record is there. Events arrive one by one at a clinic's pace, so each
QueueCancelled costs a whole fetch round (request, response, a hand-over from faust's consumer
thread to the main loop), which is most of the worker's CPU per event that needs no BPJS call
(bench/README.md, "Worker CPU"). Waiting up to `WORKER_FETCH_WAIT_MS` for more records brings
several events per round under load, at the price of at most that much delay before an event is
recorded; faust's driver fixes the wait at 1.5 s (which only matters once the minimum is raised,
and is far too long for a BPJS sync), so both values are set on the consumer faust creates,
before it starts.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer

# More than a burst of events within the wait: the wait, not the size, ends a fetch at a
# clinic's pace, while a backlog still comes in fetches as large as before.
FETCH_MIN_BYTES = 64 * 1024


def use_batched_fetches(app: faust.App, max_wait_ms: int) -> None:
    """Every consumer the app's transport creates waits up to `max_wait_ms` for FETCH_MIN_BYTES."""

    class BatchingThread(AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            # aiokafka (pinned) hands these to its Fetcher when the consumer starts.
            consumer._fetch_max_wait_ms = max_wait_ms
            consumer._fetch_min_bytes = FETCH_MIN_BYTES
            return consumer

    class BatchingConsumer(Consumer):
        def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
            return BatchingThread(self, loop=self.loop, beacon=self.beacon)

    # faust builds its consumer from the transport's `Consumer` class attribute.
    app.transport.Consumer = BatchingConsumer  # type: ignore[misc]
