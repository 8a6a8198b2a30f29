"""`service_ready` follows the same checks as /readyz: the API in-process against a database or
a Kafka that is not there (the notifier and the worker: tests/e2e/test_metrics_exist.py)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Gauge

from services.cancel_api.app import create_app
from services.cancel_api.config import CancelApiSettings
from shared.service_kit import SERVICE_READY, publish_readiness
from tests.fixtures.api import api_env
from tests.fixtures.infra import free_port, wait_until

pytestmark = pytest.mark.integration


def api_ready() -> float | None:
    return REGISTRY.get_sample_value("service_ready", {"service": "cancel-api"})


async def test_the_api_is_not_ready_while_its_database_is_away(infra, topic_prefix):
    dead = f"postgresql://antrean:antrean@127.0.0.1:{free_port()}/antrean"
    app = create_app(CancelApiSettings(**api_env(dead, infra.kafka, topic_prefix)))
    SERVICE_READY.labels("cancel-api").set(-1)  # neither value, so the change is seen
    async with app.router.lifespan_context(app):
        await wait_until(lambda: api_ready() == 0, timeout=15, what="service_ready 0")


async def test_the_api_stays_ready_while_only_kafka_is_away(database, infra):
    dead_kafka = f"127.0.0.1:{free_port()}"
    app = create_app(CancelApiSettings(**api_env(database, dead_kafka, "t-nokafka-")))
    SERVICE_READY.labels("cancel-api").set(-1)
    async with app.router.lifespan_context(app):
        await wait_until(lambda: api_ready() == 1, timeout=15, what="service_ready 1")


async def test_the_gauge_turns_ready_soon_after_the_checks_pass():
    registry = CollectorRegistry()
    gauge = Gauge("service_ready", "readiness", ["service"], registry=registry).labels("x")
    state = {"ok": False}

    async def check() -> bool:
        return state["ok"]

    async def broken() -> bool:
        raise OSError("refused")

    def value() -> float | None:
        return registry.get_sample_value("service_ready", {"service": "x"})

    checks = {"a": check, "b": broken}
    task = asyncio.create_task(publish_readiness(checks, gauge, interval_s=60, retry_s=0.05))
    try:
        await wait_until(lambda: value() == 0, what="not ready")
        state["ok"] = True
        del checks["b"]  # a check that raises counts as failing until it is gone
        await wait_until(lambda: value() == 1, what="ready within the retry interval")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_with_two_api_workers_the_ops_port_reports_one_readiness(
    spawn, database, infra, topic_prefix
):
    port, ops = free_port(), free_port()
    env = api_env(
        database,
        infra.kafka_for("api"),
        topic_prefix,
        CANCEL_API_PORT=str(port),
        OPS_PORT=str(ops),
        CANCEL_API_WORKERS="2",
    )
    spawn("services.cancel_api", env, f"http://127.0.0.1:{port}/healthz")

    def lines() -> list[str]:
        text = httpx.get(f"http://127.0.0.1:{ops}/metrics", timeout=10).text
        return [line for line in text.splitlines() if line.startswith("service_ready{")]

    # The least of the live workers' values (multiprocess mode livemin): one series, no pid.
    await wait_until(
        lambda: lines() == ['service_ready{service="cancel-api"} 1.0'],
        timeout=30,
        what="one ready series",
    )
