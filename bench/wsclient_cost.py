"""`python -m bench.wsclient_cost`: CPU time the benchmarks' websocket load generator
(`bench/wsclient.py`) spends per `queue.cancelled` message it receives, in its own code: 20,000
messages as the notifier renders them, two frames per read, fed to one session's
`data_received`. The generator shares the cores with the system it measures, so what it spends
is taken from that system; the kernel's share of a read is not in this figure."""

from __future__ import annotations

import asyncio
import time

from bench.wsclient import Recorder, Session
from services.notifier.messages import Routed
from services.notifier.session import render

MESSAGES = 20_000


def frame(queue_id: int) -> bytes:
    body = {
        "type": "queue.cancelled",
        "event_id": "3f1c2d4e-1111-2222-3333-444455556666",
        "queue_id": queue_id,
        "ticket_number": "A-007",
        "room_id": "POLI-UMUM",
        "payer": "UMUM",
        "cancelled_by": {"user_id": "u-rina", "name": "Rina"},
    }
    routed = Routed("e", "K1", "queue", "POLI-UMUM", None, body)
    return render(routed, {("queue.cancelled", 0): queue_id}).frame


async def run() -> float:
    rec = Recorder()
    session = Session("ws://127.0.0.1:1/ws", "token", rec, asyncio.Event())
    session.open = True  # past the handshake: frames only
    frames = [frame(q) for q in range(1, MESSAGES + 1)]
    reads = [b"".join(frames[i : i + 2]) for i in range(0, MESSAGES, 2)]
    started = time.process_time()
    for data in reads:
        session.data_received(data)
    took = time.process_time() - started
    assert rec.pairs == MESSAGES, rec.pairs
    return took


def main() -> None:
    took = asyncio.run(run())
    print(f"{took / MESSAGES * 1e6:.2f} us of CPU per message ({MESSAGES} messages)")


if __name__ == "__main__":
    main()
