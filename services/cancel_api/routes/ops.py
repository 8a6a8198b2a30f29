"""Liveness, readiness and (outside production) metrics of the cancel API."""

from __future__ import annotations

from fastapi import APIRouter

from services.cancel_api.context import ApiContext
from shared.kafka import KafkaConfig, kafka_reachable
from shared.service_kit import ReadinessCheck, ops_router


def checks(ctx: ApiContext) -> tuple[dict[str, ReadinessCheck], dict[str, ReadinessCheck]]:
    """The checks that make the API ready, and those /readyz only reports.

    Kafka is reported, not required: the outbox keeps cancelling through a Kafka outage, so a
    load balancer must not take the API out of service then."""

    async def db_ok() -> bool:
        async with ctx.pool.acquire(timeout=2) as conn:
            return bool(await conn.fetchval("select 1"))

    async def kafka_ok() -> bool:
        if ctx.relay is not None and ctx.relay.kafka_ok:
            return True
        return await kafka_reachable(KafkaConfig.from_settings(ctx.settings))

    return {"database": db_ok}, {"kafka": kafka_ok}


def router(ctx: ApiContext) -> APIRouter:
    # Production serves /metrics on the ops port only (__main__, OPS_PORT).
    required, reported = checks(ctx)
    return ops_router(required, reported=reported, metrics=ctx.settings.public_metrics)
