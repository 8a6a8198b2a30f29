"""Kafka consumer lag (messages) of the notifier and the worker's group, sampled beside a step."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from websockets.asyncio.client import ClientConnection, connect

from bench.common import percentiles, scrape, token
from bench.stack import Stack
from services.bpjs_sync_worker.consumer_lag import ConsumerLag
from services.notifier import cursor
from shared.events import TOPIC_QUEUE_CANCELLED
from shared.kafka import make_admin, make_consumer

INTERVAL_S = 0.25


class Probe:
    """One staff screen of the benchmark's clinic that keeps the notifier's position from the
    cursor of each message it receives.

    The notifier reads with no group and commits nothing, so Kafka has no committed offset of
    it. Its `notifier_consumer_lag` gauge is measured only every few seconds and sums every
    topic. A message's cursor is the notifier's position once it routed that record; as every
    queue-cancelled record of the clinic reaches this screen, end offsets minus the latest
    cursor are the records the notifier has not yet delivered to a screen (its read, routing
    and this screen's send queue)."""

    def __init__(self, stack: Stack) -> None:
        self.url = stack.ws_url
        self.position: dict[int, int] = {}  # queue-cancelled partition -> next offset
        self.ready = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._ws = await connect(self.url, max_size=None)
        tok = token("u-lag-probe", ["cancel antrean"])
        await self._ws.send(orjson.dumps({"type": "auth", "token": tok}).decode())
        self._reader = asyncio.create_task(self._read(self._ws))
        await asyncio.wait_for(self.ready.wait(), 30)

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            m = orjson.loads(raw)
            if "cursor" in m:
                for (topic, p), offset in cursor.decode(m["cursor"]).items():
                    if topic == TOPIC_QUEUE_CANCELLED:
                        self.position[p] = max(self.position.get(p, 0), offset)
            self.ready.set()

    @property
    def open(self) -> bool:
        return self._reader is not None and not self._reader.done()

    @staticmethod
    def lag(ends: dict[TopicPartition, int], position: dict[int, int]) -> int:
        """`position` taken before `ends` were asked for: what the notifier delivered meanwhile
        counts as lag (at most one ListOffsets round trip of records), never the reverse."""
        return sum(max(0, end - position.get(tp.partition, 0)) for tp, end in ends.items())

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self._ws is not None:
            await self._ws.close()


async def notifier_gauge(http: aiohttp.ClientSession, url: str) -> int:
    """The notifier's own `notifier_consumer_lag` (measured by it every few seconds)."""
    for s in await scrape(http, url, "notifier_consumer_lag"):
        return int(s.value)
    raise LookupError("no notifier_consumer_lag on the notifier's /metrics")


async def sample(stack: Stack, stop: asyncio.Event, out: dict[str, Any]) -> None:
    """Every INTERVAL_S until `stop`: the end offsets of queue-cancelled, the notifier's lag on
    it (Probe) and its gauge, and the worker's group's lag on it (end minus committed offsets,
    the worker's own ConsumerLag; faust commits every second, so up to a second of records
    counts as lag even when the worker keeps up). Samples Kafka or the notifier did not answer
    are counted as missed, not taken as 0."""
    topic = f"{stack.prefix}{TOPIC_QUEUE_CANCELLED}"
    worker = ConsumerLag(stack.kafka, f"{stack.prefix}worker", [topic])
    ends = make_consumer(stack.kafka, group_id=None)
    probe = Probe(stack)
    await ends.start()
    try:
        await probe.start()
        tps = await partitions(stack, topic)
        metrics = f"http://127.0.0.1:{stack.ports['notifier']}/metrics"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            while not stop.is_set():
                before = dict(probe.position)
                try:
                    e, w, g = await asyncio.gather(
                        ends.end_offsets(tps), worker.measure(), notifier_gauge(http, metrics)
                    )
                except (aiohttp.ClientError, TimeoutError, KafkaError):
                    out["missed"] += 1
                    await asyncio.sleep(INTERVAL_S)
                    continue
                if probe.open:
                    out["notifier"].append(probe.lag(e, before))
                else:  # closed by the notifier (e.g. a full send queue): its cursor is stale
                    out["probe_closed"] = True
                out["gauge"].append(g)
                out["worker"].append(w[topic])
                await asyncio.sleep(INTERVAL_S)
    finally:
        await probe.stop()
        await worker.close()
        await ends.stop()


async def partitions(stack: Stack, topic: str) -> list[TopicPartition]:
    admin = make_admin(stack.kafka, request_timeout_ms=5000)
    await admin.start()
    try:
        [found] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if found["error_code"] or not found["partitions"]:
        raise LookupError(f"topic {topic}: no partitions")
    return [TopicPartition(topic, p["partition"]) for p in found["partitions"]]


def new_samples() -> dict[str, Any]:
    return {"notifier": [], "gauge": [], "worker": [], "missed": 0, "probe_closed": False}


def summary(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "notifier_lag_msgs": percentiles(s["notifier"], scale=1),
        "notifier_gauge_msgs": percentiles(s["gauge"], scale=1),
        "worker_lag_msgs": percentiles(s["worker"], scale=1),
        "consumer_lag_samples_missed": s["missed"],
        "notifier_probe_closed": s["probe_closed"],
    }
