"""Admission control of the cancel API against real PostgreSQL: past the in-flight bound, the
event-loop lag bound or while an admitted request waits too long for a database connection, a
new request is refused at once (503 `unavailable`, Retry-After), does nothing, and its retry with
the same Idempotency-Key cancels exactly once; an admitted request is refused only when no
connection comes within the acquire timeout."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from services.cancel_api.app import create_app
from services.cancel_api.config import CancelApiSettings
from services.cancel_api.errors import TITLES
from tests.fixtures.api import Api, api_env, auth, token
from tests.fixtures.infra import lock_waiters, wait_until

pytestmark = pytest.mark.integration
BODY = {"reason_code": "no_show", "reason_text": None}


@dataclass
class InProcessApi(Api):
    app: FastAPI


@contextlib.asynccontextmanager
async def started_api(database, infra, prefix: str, **extra: str) -> AsyncIterator[InProcessApi]:
    settings = CancelApiSettings(**api_env(database, infra.kafka_for("api"), prefix, **extra))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield InProcessApi(client, settings.topic("queue-cancelled"), app)


@contextlib.asynccontextmanager
async def ticket_locked(database: str, queue_id: int) -> AsyncIterator[None]:
    """Holds the ticket's row lock: a cancel of it waits in the database, in flight, holding
    its pooled connection, until the block ends."""
    conn = await asyncpg.connect(database)
    try:
        async with conn.transaction():
            await conn.execute("select 1 from queue_ticket where id = $1 for update", queue_id)
            yield
    finally:
        await conn.close()


async def committed(database: str, queue_id: int) -> tuple[str, int, int]:
    """The ticket's status, its outbox rows and its cancel audit rows."""
    conn = await asyncpg.connect(database)
    try:
        status = await conn.fetchval("select status from queue_ticket where id = $1", queue_id)
        outbox = await conn.fetchval(
            "select count(*) from outbox where kafka_key = $1", str(queue_id)
        )
        audits = await conn.fetchval(
            "select count(*) from queue_audit where queue_id = $1 and action = 'cancel'", queue_id
        )
    finally:
        await conn.close()
    return status, outbox, audits


def refused(reason: str) -> float:
    return REGISTRY.get_sample_value("http_requests_refused_total", {"reason": reason}) or 0.0


def assert_overloaded(r: httpx.Response, retry_after: str) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["retry-after"] == retry_after
    assert r.headers["x-request-id"]
    body = r.json()
    assert (body["code"], body["status"]) == ("unavailable", 503)
    assert body["title"] == TITLES["unavailable"]
    assert body["detail"] and body["type"]


async def cancel_with_key(api: Api, queue_id: int, key: str) -> httpx.Response:
    return await api.cancel(queue_id, headers={"Idempotency-Key": key}, json=BODY)


def one_connection_api(database, infra, prefix: str, **bounds: str):
    """An API whose pool has one connection for the cancels (the relay, which would keep a
    listening connection of it, is off)."""
    return started_api(
        database,
        infra,
        prefix,
        DB_POOL_MAX="1",
        API_MAX_IN_FLIGHT="10",
        OUTBOX_RELAY_ENABLED="false",
        **bounds,
    )


@contextlib.asynccontextmanager
async def connection_held(
    api: Api, database: str, queue_id: int
) -> AsyncIterator[asyncio.Task[httpx.Response]]:
    """A cancel of `queue_id` in flight, holding its pooled connection while it waits for the
    ticket's row lock until the block ends; yields that cancel."""
    async with ticket_locked(database, queue_id):
        first = asyncio.create_task(cancel_with_key(api, queue_id, "k-held"))
        await wait_until(lambda: lock_waiters(database), what="the held cancel in flight")
        yield first


async def test_past_the_in_flight_bound_a_cancel_is_refused_with_503_and_commits_nothing(
    database, infra, topic_prefix
):
    async with started_api(
        database, infra, topic_prefix, API_MAX_IN_FLIGHT="1", API_RETRY_AFTER_S="3"
    ) as api:
        held, other = await api.register(name="Siti"), await api.register(name="Budi")
        before = refused("in_flight")
        async with connection_held(api, database, held["id"]) as first:
            r = await cancel_with_key(api, other["id"], "k-other")
            assert_overloaded(r, "3")
            assert refused("in_flight") == before + 1
            # A load balancer and a browser opening the page still get their answers.
            for path in ("/healthz", "/readyz", "/metrics", "/", "/ui/config", "/static/app.js"):
                assert (await api.client.get(path)).status_code == 200, path
            assert await committed(database, other["id"]) == ("waiting", 0, 0)
        assert (await first).status_code == 200
        retried = await cancel_with_key(api, other["id"], "k-other")
        assert retried.status_code == 200, retried.text
        assert retried.json()["queue"]["status"] == "cancelled"
        assert (await cancel_with_key(api, other["id"], "k-other")).json() == retried.json()
        assert await committed(database, other["id"]) == ("cancelled", 1, 1)


async def test_while_a_cancel_waits_past_the_pool_wait_bound_newcomers_are_refused_at_once(
    database, infra, topic_prefix
):
    async with one_connection_api(
        database, infra, topic_prefix, API_MAX_POOL_WAIT_S="0.2", DB_ACQUIRE_TIMEOUT_S="30"
    ) as api:
        waits = api.app.state.ctx.pool.waits  # the requests waiting for a connection now
        held, admitted, other = [await api.register(name=n) for n in ("Siti", "Budi", "Ani")]
        before = refused("db_pool_wait")
        async with connection_held(api, database, held["id"]) as first:
            second = asyncio.create_task(cancel_with_key(api, admitted["id"], "k-admitted"))
            await wait_until(lambda: waits.oldest_s() > 0.2, what="a wait past the bound")
            # The newcomer is refused at the door, without waiting for a connection itself.
            r = await cancel_with_key(api, other["id"], "k-other")
            assert_overloaded(r, "1")
            assert refused("db_pool_wait") == before + 1
            assert not second.done()
            assert (await api.client.get("/healthz")).status_code == 200
            assert await committed(database, other["id"]) == ("waiting", 0, 0)
        assert (await first).status_code == 200
        # The admitted cancel waited longer than the bound and is served, not refused late.
        assert (await second).status_code == 200, (await second).text
        assert await committed(database, admitted["id"]) == ("cancelled", 1, 1)
        assert waits.oldest_s() == 0.0
        retried = await cancel_with_key(api, other["id"], "k-other")
        assert retried.status_code == 200, retried.text
        assert await committed(database, other["id"]) == ("cancelled", 1, 1)


async def test_an_admitted_cancel_without_a_connection_past_the_acquire_timeout_is_refused(
    database, infra, topic_prefix
):
    # The door's bound off: this is the ceiling for a database that hands out no connection.
    async with one_connection_api(
        database, infra, topic_prefix, API_MAX_POOL_WAIT_S="0", DB_ACQUIRE_TIMEOUT_S="0.3"
    ) as api:
        held, other = await api.register(name="Siti"), await api.register(name="Budi")
        before = refused("db_pool_timeout")
        async with connection_held(api, database, held["id"]) as first:
            r = await cancel_with_key(api, other["id"], "k-other")
            assert_overloaded(r, "1")
            assert refused("db_pool_timeout") == before + 1
            assert await committed(database, other["id"]) == ("waiting", 0, 0)
        assert (await first).status_code == 200
        retried = await cancel_with_key(api, other["id"], "k-other")
        assert retried.status_code == 200, retried.text
        assert await committed(database, other["id"]) == ("cancelled", 1, 1)


async def test_a_refused_cancel_without_a_key_is_refused_before_anything_and_can_be_sent_again(
    database, infra, topic_prefix
):
    async with started_api(database, infra, topic_prefix, API_MAX_IN_FLIGHT="1") as api:
        held, other = await api.register(name="Siti"), await api.register(name="Budi")
        async with ticket_locked(database, held["id"]):
            first = asyncio.create_task(api.cancel(held["id"]))
            await wait_until(lambda: lock_waiters(database), what="the held cancel in flight")
            assert_overloaded(await api.cancel(other["id"]), "1")
            # Any other route past the bound too: only the exempt paths are served.
            r = await api.client.get("/antrian_ruangan?status=waiting", headers=auth(token()))
            assert_overloaded(r, "1")
        assert (await first).status_code == 200
        assert (await api.cancel(other["id"])).status_code == 200
        assert await committed(database, other["id"]) == ("cancelled", 1, 1)


async def test_a_request_arriving_while_the_event_loop_is_stalled_is_refused_and_later_served(
    database, infra, topic_prefix
):
    async with started_api(database, infra, topic_prefix, API_MAX_LOOP_LAG_S="0.05") as api:
        t = await api.register(name="Siti")
        before = refused("loop_lag")
        # The process starved of CPU: the event loop runs nothing for 0.3 s, and the request
        # that arrives meanwhile would wait behind everything queued.
        time.sleep(0.3)  # the stall is the condition under test
        assert_overloaded(await cancel_with_key(api, t["id"], "k"), "1")
        assert refused("loop_lag") == before + 1
        assert await committed(database, t["id"]) == ("waiting", 0, 0)

        async def served() -> bool:
            return (await cancel_with_key(api, t["id"], "k")).status_code == 200

        await wait_until(served, what="the cancel served once the loop keeps up")
        assert await committed(database, t["id"]) == ("cancelled", 1, 1)


def test_the_admission_defaults_four_times_a_pool_of_8_a_quarter_second_lag_half_a_second_wait():
    env = api_env("postgresql://x/y", "k:9092", "p", DB_POOL_MAX="10")
    # The tests' relaxed bounds
    del env["API_MAX_LOOP_LAG_S"], env["API_MAX_POOL_WAIT_S"], env["DB_ACQUIRE_TIMEOUT_S"]
    settings = CancelApiSettings(**env)
    assert settings.max_in_flight == 40
    del env["DB_POOL_MAX"]
    # A few connections per core of a small database (docs/DEPLOY.md, PostgreSQL connections)
    assert CancelApiSettings(**env).db_pool_max == 8
    assert settings.api_max_loop_lag_s == 0.25 and settings.api_max_pool_wait_s == 0.5
    assert settings.db_acquire_timeout_s == 5.0 and settings.api_retry_after_s == 1
