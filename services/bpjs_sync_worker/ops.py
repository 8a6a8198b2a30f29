"""The worker's /healthz, /readyz and /metrics pages and its readiness and consumer-lag gauges."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.bpjs_sync_worker.config import WorkerSettings
from services.bpjs_sync_worker.consumer_lag import ConsumerLag
from shared.events import TOPIC_QUEUE_CANCELLED
from shared.kafka import KafkaConfig, kafka_reachable
from shared.service_kit import SERVICE_READY, ReadinessCheck, publish_readiness, readiness

SERVICE = "bpjs-sync-worker"


def checks(
    settings: WorkerSettings,
    db: Callable[[], asyncpg.Pool | None],
    pool_task: Callable[[], asyncio.Task[None] | None],
) -> dict[str, ReadinessCheck]:
    """What makes the worker ready: its database, Kafka, and a job pool that is running."""

    async def database() -> bool:
        pool = db()
        if pool is None:
            return False
        async with pool.acquire(timeout=2) as conn:
            return bool(await conn.fetchval("select 1"))

    async def kafka() -> bool:
        return await kafka_reachable(KafkaConfig.from_settings(settings))

    async def job_pool() -> bool:
        task = pool_task()
        return task is not None and not task.done()

    return {"database": database, "kafka": kafka, "job_pool": job_pool}


class Gauges:
    """`service_ready` and `kafka_consumer_lag` of the worker's group, refreshed in the
    background between start() and stop()."""

    def __init__(self, settings: WorkerSettings, ready_checks: dict[str, ReadinessCheck]) -> None:
        self.ready_checks = ready_checks
        self.lag = ConsumerLag(
            KafkaConfig.from_settings(settings),
            settings.consumer_group,
            [settings.topic(TOPIC_QUEUE_CANCELLED)],
        )
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        ready = SERVICE_READY.labels(SERVICE)
        self.tasks = [
            asyncio.create_task(publish_readiness(self.ready_checks, ready)),
            asyncio.create_task(self.lag.run()),
        ]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.lag.close()


def pages(app: faust.App, ready_checks: dict[str, ReadinessCheck]) -> None:
    @app.page("/healthz")
    async def healthz(view: View, _: Request) -> Response:
        return view.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(view: View, _: Request) -> Response:
        ok, body = await readiness(ready_checks)
        return view.json(body, status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics(view: View, _: Request) -> Response:
        return view.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
