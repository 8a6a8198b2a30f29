"""Liveness, readiness and (outside production) metrics of the cancel API."""

from __future__ import annotations

from fastapi import APIRouter

from services.cancel_api.context import ApiContext
from shared.kafka import KafkaConfig, kafka_reachable
from shared.service_kit import ops_router


def router(ctx: ApiContext) -> APIRouter:
    async def db_ok() -> bool:
        async with ctx.pool.acquire(timeout=2) as conn:
            return bool(await conn.fetchval("select 1"))

    async def kafka_ok() -> bool:
        if ctx.relay is not None and ctx.relay.kafka_ok:
            return True
        return await kafka_reachable(KafkaConfig.from_settings(ctx.settings))

    # Production serves /metrics on the ops port only (__main__, OPS_PORT).
    # Kafka is reported, not required: the outbox keeps cancelling through a Kafka outage, so a
    # load balancer must not take the API out of service then.
    return ops_router(
        {"database": db_ok}, reported={"kafka": kafka_ok}, metrics=ctx.settings.public_metrics
    )
