"""`python -m bench.fanout_cost`: the notifier's CPU time per delivery in its own code, from a
Kafka record handed to the hub to the frame given to a session's socket (decode, routing, the
per-session filter, the counters, the `event_pushed` line), for 2,000 cancels to 500 sessions
of one clinic. The sockets take every frame without a system call, so the kernel's share of a
real delivery (the socket write, most of the rest) is not in this figure."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime

from services.notifier.hub import Hub, RawRecord
from services.notifier.messages import Audience
from services.notifier.metrics import NotifierMetrics
from services.notifier.session import Session
from shared.events import CancelledBy, QueueCancelledData, encode_event, new_event
from shared.logging import configure_logging

SESSIONS, CANCELS = 500, 2_000
TP = ("queue-cancelled", 0)


class Sink:
    """A socket that takes every frame at once."""

    def write_now(self, frame: bytes) -> bool:
        return True

    async def send(self, data: bytes) -> None:
        raise AssertionError("never behind")

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        return None


def record(offset: int) -> RawRecord:
    event = new_event(
        QueueCancelledData(
            queue_id=offset + 1,
            clinic_id="K1",
            room_id="POLI-UMUM",
            ticket_number="A-007",
            payer="UMUM",
            bpjs=None,
            reason_code="other",
            reason_text=None,
            cancelled_by=CancelledBy(user_id="u-rina", name="Rina"),
            cancelled_at=datetime.now(UTC),
        ),
        source="bench",
    )
    return RawRecord(TP, offset, int(time.time() * 1000), encode_event(event))


async def run() -> float:
    metrics = NotifierMetrics()
    hub = Hub(metrics, None, history_per_partition=1000, replay_concurrency=1)  # type: ignore[arg-type]
    hub.start({TP: 0})
    for i in range(SESSIONS):
        session = Session(Sink(), Audience(f"u{i}", "K1", False), 50, metrics)
        hub.add(session)
        session.release()
    records = [record(i) for i in range(CANCELS)]
    started = time.process_time()
    for rec in records:
        hub.ingest([rec])
    return time.process_time() - started


def main() -> None:
    with open(os.devnull, "w") as sink:
        configure_logging("bench", "INFO", json=True, stream=sink)
        took = asyncio.run(run())
    print(f"{took / (SESSIONS * CANCELS) * 1e6:.3f} us of CPU per delivery "
          f"({CANCELS} cancels to {SESSIONS} sessions)")  # fmt: skip


if __name__ == "__main__":
    main()
