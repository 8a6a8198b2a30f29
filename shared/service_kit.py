"""What every service exposes: /healthz, /readyz, Prometheus /metrics, and SIGTERM handling."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

ReadinessCheck = Callable[[], Awaitable[bool]]


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


def ops_router(
    checks: Mapping[str, ReadinessCheck], registry: CollectorRegistry = REGISTRY
) -> APIRouter:
    """Liveness (the process answers), readiness (its dependencies answer) and metrics."""
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        results = await run_checks(checks)
        ok = all(results.values())
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "checks": results},
            status_code=200 if ok else 503,
        )

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


def stop_on_signals(
    stop: asyncio.Event, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)
) -> None:
    """Set `stop` on SIGTERM/SIGINT so a process can finish in-flight work and exit cleanly."""
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
