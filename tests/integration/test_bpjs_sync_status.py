"""GET /bpjs_sync/status: BPJS reachable, breaker open (since) or unknown from the workers' rows,
and the admin's own clinic's oldest unsynced cancellation, counts and dead letters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from shared.config import API_DB_ROLE
from tests.fixtures.api import auth, token
from tests.fixtures.infra import role_dsn
from tests.integration.test_bpjs_report import cancelled_at

pytestmark = pytest.mark.integration

ADMIN = ["manage bpjs sync"]
NOW = datetime.now(UTC)


def admin(clinic: str = "KLINIK-A") -> dict[str, str]:
    return auth(token(clinic, perms=ADMIN, user="u-adm", name="Admin"))


async def status(api, clinic: str = "KLINIK-A") -> dict:
    r = await api.client.get("/bpjs_sync/status", headers=admin(clinic))
    assert r.status_code == 200, r.text
    return r.json()


async def worker(database: str, worker_id: str, state: str, since: datetime, age_s: float = 0):
    """A worker's row as the worker writes it, heard from `age_s` ago."""
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(
            "insert into worker_status (worker_id, breaker_state, breaker_since, heartbeat_at)"
            " values ($1, $2, $3, now() - make_interval(secs => $4))"
            " on conflict (worker_id) do update set breaker_state = excluded.breaker_state,"
            " breaker_since = excluded.breaker_since, heartbeat_at = excluded.heartbeat_at",
            worker_id,
            state,
            since,
            float(age_s),
        )
    finally:
        await conn.close()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_status_needs_manage_bpjs_sync(api):
    r = await api.client.get("/bpjs_sync/status", headers=auth(token()))
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    r = await api.client.get("/bpjs_sync/status")
    assert r.status_code == 401


async def test_without_any_worker_heard_from_bpjs_is_unknown_and_nothing_is_counted(api):
    s = await status(api)
    assert s["bpjs"] == "unknown" and s["since"] is None and s["last_heartbeat_at"] is None
    assert s["workers"] == 0 and s["oldest_unsynced"] is None and s["dead_letters"] == 0
    assert s["counts"] == {"unsynced": 0, "failed": 0, "unconfirmed": 0}


async def test_breaker_state_comes_from_live_workers_and_a_stale_heartbeat_is_unknown(
    api, database
):
    opened = NOW - timedelta(minutes=7)
    await worker(database, "w-1", "closed", NOW - timedelta(hours=1))
    s = await status(api)
    assert (s["bpjs"], s["since"], s["workers"]) == ("reachable", None, 1)

    await worker(database, "w-2", "open", opened)
    s = await status(api)
    assert s["bpjs"] == "breaker_open" and at(s["since"]) == opened and s["workers"] == 2
    await worker(database, "w-3", "half_open", opened - timedelta(minutes=1))  # probing: held
    s = await status(api)
    assert s["bpjs"] == "breaker_open" and at(s["since"]) == opened - timedelta(minutes=1)

    # Every worker silent for over a minute: what they said last is no longer the truth.
    for w in ("w-1", "w-2", "w-3"):
        await worker(database, w, "open", opened, age_s=61)
    s = await status(api)
    assert s["bpjs"] == "unknown" and s["since"] is None and s["workers"] == 0
    heard, now = at(s["last_heartbeat_at"]), datetime.now(UTC)
    assert now - timedelta(seconds=120) < heard < now - timedelta(seconds=60)

    await worker(database, "w-1", "closed", NOW)  # one comes back; the stale open ones do not count
    assert (await status(api))["bpjs"] == "reachable"


async def test_oldest_unsynced_counts_and_dead_letters_are_the_admins_clinic_only(api, database):
    hour = timedelta(hours=1)
    old = await cancelled_at(api, database, "Tua", NOW - 3 * hour, sync="failed",
                             job={"warned": True})  # fmt: skip
    # No job yet (its event never arrived): it counts all the same.
    await cancelled_at(api, database, "Muda", NOW - hour, sync="pending")
    await cancelled_at(api, database, "Sudah", NOW - 5 * hour, sync="synced",
                       job={"confirmable": True})  # fmt: skip
    await cancelled_at(api, database, "Manual", NOW - 6 * hour, sync="resolved_manually",
                       job={"will_retry": False})  # fmt: skip
    other = await cancelled_at(api, database, "Lain", NOW - 9 * hour, clinic="KLINIK-B",
                               sync="failed", job={"warned": True})  # fmt: skip
    conn = await asyncpg.connect(database)
    try:
        for i, key in enumerate(
            [str(old["id"]).encode(), str(old["id"]).encode(), str(other["id"]).encode(),
             b"not-a-queue-id", None, b"\x00\xff"]
        ):  # fmt: skip
            await conn.execute(
                'insert into dead_letter (consumer, topic, partition, "offset", key, value,'
                " reason, error) values ('g', 'queue-cancelled', 0, $1, $2, 'x', 'invalid', 'x')",
                i,
                key,
            )
    finally:
        await conn.close()

    s = await status(api)
    oldest = s["oldest_unsynced"]
    assert oldest["queue_id"] == old["id"] and oldest["ticket_number"] == old["ticket_number"]
    assert at(oldest["cancelled_at"]) == NOW - 3 * hour
    # NOW is taken at import; the suite may reach this test many minutes later.
    since_now = (datetime.now(UTC) - NOW).total_seconds()
    assert 3 * 3600 <= oldest["age_seconds"] <= 3 * 3600 + since_now + 1
    assert s["counts"] == {"unsynced": 2, "failed": 1, "unconfirmed": 1}
    assert s["dead_letters"] == 2

    b = await status(api, "KLINIK-B")
    assert b["oldest_unsynced"]["queue_id"] == other["id"] and b["dead_letters"] == 1
    assert b["counts"] == {"unsynced": 1, "failed": 1, "unconfirmed": 0}
    c = await status(api, "KLINIK-C")
    assert c["oldest_unsynced"] is None and c["dead_letters"] == 0
    assert c["counts"] == {"unsynced": 0, "failed": 0, "unconfirmed": 0}


async def test_the_api_role_counts_dead_letters_by_key_but_cannot_read_their_messages(database):
    conn = await asyncpg.connect(role_dsn(database, API_DB_ROLE))
    try:
        assert await conn.fetchval("select count(*) from dead_letter where key is not null") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("select value from dead_letter")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "insert into worker_status (worker_id, breaker_state, breaker_since)"
                " values ('api', 'closed', now())"
            )
    finally:
        await conn.close()
