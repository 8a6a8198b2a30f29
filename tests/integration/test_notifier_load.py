"""The notifier under a resume storm: a deep backlog on the topics costs it neither memory nor
the live sessions' delivery."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import orjson
import pytest
import websockets

from services.notifier import cursor
from shared.events import encode_event
from shared.kafka import KafkaConfig, make_producer
from tests.fixtures.api import token
from tests.integration.test_notifier import TOPIC_OF, cancelled, connect, start_notifier

pytestmark = pytest.mark.integration

BACKLOG = 100_000
CLINICS = 50
RESUMES = 50
RSS_GROWTH_LIMIT = 50 * 1024 * 1024


def rss(pid: int) -> int:
    """Resident set size of a process, in bytes (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


async def produce_backlog(kafka: KafkaConfig, topic: str) -> None:
    """BACKLOG events of CLINICS clinics, batched by the producer (no wait per message)."""
    template = orjson.loads(encode_event(cancelled()))
    producer = make_producer(kafka, linger_ms=50)
    await producer.start()
    try:
        for start in range(0, BACKLOG, 10_000):
            acks = []
            for i in range(start, start + 10_000):
                data = {**template["data"], "queue_id": i + 1, "clinic_id": f"K{i % CLINICS}"}
                value = orjson.dumps({**template, "id": f"load-{i}", "data": data})
                acks.append(await producer.send(topic, value, key=str(i).encode()))
            await asyncio.gather(*acks)
    finally:
        await producer.stop()


async def resume_storm(url: str, cursors: list[str]) -> list[dict]:
    """RESUMES sessions of different clinics resume at once; each one's answer to `resume`."""

    async def one(n: int) -> dict:
        ws = await websockets.connect(url, open_timeout=30)
        await ws.send(json.dumps({"type": "auth", "token": token(f"K{n % CLINICS}", user=f"u{n}")}))
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send(json.dumps({"type": "resume", "cursor": cursors[n % len(cursors)]}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 60))
        await ws.close()
        return answer

    return await asyncio.gather(*(one(n) for n in range(RESUMES)))


async def test_fifty_deep_resumes_cost_little_memory_and_never_stall_a_live_session(
    spawn, infra, topic_prefix
):
    topic = f"{topic_prefix}{TOPIC_OF['QueueCancelled']}"
    await produce_backlog(infra.kafka, topic)
    proc, url, _ = start_notifier(spawn, infra.kafka_for("notifier"), topic_prefix)
    assert proc.proc is not None
    live = await connect(url, token("K0", user="u-live"))
    assert sum(cursor.decode(live.ready["cursor"]).values()) == BACKLOG  # all on the topics
    producer = make_producer(infra.kafka, linger_ms=0)
    await producer.start()

    async def publish(event) -> None:
        await producer.send_and_wait(topic, encode_event(event), key=b"live")

    warm = cancelled("K0")
    await publish(warm)
    await live.wait_for(warm.id)
    pid = proc.proc.pid
    before = rss(pid)
    # An empty cursor, an empty position, and a real cursor from before the whole backlog.
    from_the_start = cursor.encode({(TOPIC_OF["QueueCancelled"], p): 0 for p in range(4)})
    storm = asyncio.create_task(resume_storm(url, ["", cursor.encode({}), from_the_start]))
    peak = before

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss(pid))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    try:
        during = cancelled("K0")
        await publish(during)
        await live.wait_for(during.id, timeout=1.0)  # the live session is not held up
        answers = await storm
    finally:
        sampler.cancel()
        await producer.stop()
    assert [a["type"] for a in answers] == ["resync"] * RESUMES
    assert peak - before < RSS_GROWTH_LIMIT, f"RSS grew by {(peak - before) >> 20} MiB"
    await live.close()
