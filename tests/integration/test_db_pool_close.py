"""A stopping service never hangs on a database connection that was not given back."""

import asyncio

import asyncpg
import httpx
from structlog.testing import capture_logs

import shared.db
from services.cancel_api.app import create_app
from services.cancel_api.config import CancelApiSettings
from shared.db import close_pool, create_pool
from tests.fixtures.api import api_env
from tests.fixtures.infra import wait_until


async def test_close_pool_terminates_a_held_connection_and_names_it(database):
    pool = await create_pool(database, min_size=1, max_size=2)
    held = await pool.acquire()  # never released, as by a stuck or buggy holder
    pid = held.get_server_pid()
    with capture_logs() as logs:
        await asyncio.wait_for(close_pool(pool, grace_s=0.5), 30)
    admin = await asyncpg.connect(database)
    try:
        gone = await wait_until(
            lambda: admin.fetchval("select count(*) = 0 from pg_stat_activity where pid = $1", pid),
            what="the held connection's backend to end",
        )
    finally:
        await admin.close()
    assert gone
    errors = [e for e in logs if e["event"] == "db_pool_close_timed_out"]
    assert errors and errors[0]["connections_in_use"] == 1 and errors[0]["log_level"] == "error"


async def test_close_pool_closes_gracefully_when_everything_was_given_back(database):
    pool = await create_pool(database, min_size=2, max_size=2)
    async with pool.acquire() as conn:
        await conn.execute("select 1")
    with capture_logs() as logs:
        await close_pool(pool, grace_s=5)
    assert pool.get_size() == 0
    assert not [e for e in logs if e["event"] == "db_pool_close_timed_out"]


async def test_the_api_stops_although_a_connection_was_never_given_back(
    database, infra, topic_prefix, monkeypatch
):
    monkeypatch.setattr(shared.db, "POOL_CLOSE_TIMEOUT_S", 0.5)
    app = create_app(CancelApiSettings(**api_env(database, infra.kafka_for("api"), topic_prefix)))
    with capture_logs() as logs:
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api"
        ) as c:
            assert (await c.get("/readyz")).status_code == 200
        await app.state.ctx.pool.pool.acquire()  # leaked
        await asyncio.wait_for(lifespan.__aexit__(None, None, None), 60)
    assert [e for e in logs if e["event"] == "db_pool_close_timed_out"]
