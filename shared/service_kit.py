"""What every service exposes: /healthz, /readyz, Prometheus /metrics, and SIGTERM handling."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import signal
import tempfile
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Gauge,
    generate_latest,
    start_http_server,
)
from prometheus_client.multiprocess import MultiProcessCollector

ReadinessCheck = Callable[[], Awaitable[bool]]

READY_HELP = "1 while the service's readiness checks (those of /readyz) pass, else 0"
# livemin: with several API worker processes, one that is not ready makes the service not ready.
SERVICE_READY = Gauge("service_ready", READY_HELP, ["service"], multiprocess_mode="livemin")
READINESS_INTERVAL_S = 15.0
READINESS_RETRY_S = 2.0


async def run_checks(
    checks: Mapping[str, ReadinessCheck], timeout_s: float = 3.0
) -> dict[str, bool]:
    async def one(check: ReadinessCheck) -> bool:
        try:
            return await asyncio.wait_for(check(), timeout_s)
        except Exception:
            return False

    results = await asyncio.gather(*(one(c) for c in checks.values()))
    return dict(zip(checks.keys(), results, strict=True))


async def readiness(
    checks: Mapping[str, ReadinessCheck], reported: Mapping[str, ReadinessCheck] | None = None
) -> tuple[bool, dict[str, object]]:
    """Whether every check answers, and the body of a /readyz answer. `reported` checks are
    shown in the body but do not make the service unready."""
    results = await run_checks({**checks, **(reported or {})})
    ok = all(results[name] for name in checks)
    return ok, {"status": "ready" if ok else "not_ready", "checks": results}


async def publish_readiness(
    checks: Mapping[str, ReadinessCheck],
    ready: Gauge,
    *,
    interval_s: float = READINESS_INTERVAL_S,
    retry_s: float = READINESS_RETRY_S,
) -> None:
    """Until cancelled: run the readiness checks and set `ready` (a gauge child) to 1 or 0,
    every `interval_s`, or every `retry_s` while not ready (a restart is seen ready at once)."""
    while True:
        ok, _ = await readiness(checks)
        ready.set(1 if ok else 0)
        await asyncio.sleep(interval_s if ok else min(retry_s, interval_s))


def ops_router(
    checks: Mapping[str, ReadinessCheck],
    registry: CollectorRegistry = REGISTRY,
    *,
    reported: Mapping[str, ReadinessCheck] | None = None,
    metrics: bool = True,
) -> APIRouter:
    """Liveness (the process answers), readiness (its dependencies answer) and, unless
    `metrics` is False (production: they are on the ops port), metrics. `reported` checks are
    shown in the readiness body but do not make the service unready (e.g. Kafka for the API,
    whose outbox absorbs an outage)."""
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        ok, body = await readiness(checks, reported)
        return JSONResponse(body, status_code=200 if ok else 503)

    if metrics:

        @router.get("/metrics")
        async def metrics_page() -> Response:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


def start_metrics_server(host: str, port: int, *, processes: int = 1) -> None:
    """Serve Prometheus metrics on an ops port from a daemon thread of this process.

    Call it before the server starts. With several worker processes (uvicorn `workers`) the
    workers are spawned later, and they and this process share prometheus_client's
    multiprocess directory, so the one ops port reports the sum of all of them.
    """
    registry = REGISTRY
    if processes > 1:
        directory = tempfile.mkdtemp(prefix="antrean-metrics-")
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry)


def stop_on_signals(
    stop: asyncio.Event, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)
) -> None:
    """Set `stop` on SIGTERM/SIGINT so a process can finish in-flight work and exit cleanly."""
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
