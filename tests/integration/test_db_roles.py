"""Each service's database role may do what its service does and nothing more (migration 0006)."""

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from shared.config import API_DB_ROLE, WORKER_DB_ROLE
from shared.db import set_role_login
from tests.fixtures.api import api_env
from tests.fixtures.infra import role_dsn

pytestmark = pytest.mark.integration

REFUSED = asyncpg.InsufficientPrivilegeError


async def _ticket_with_audit(owner: asyncpg.Connection, payer: str = "BPJS") -> int:
    qid = await owner.fetchval(
        "insert into queue_ticket (clinic_id, room_id, service_date, ticket_seq, ticket_number,"
        " patient_mrn, patient_name, payer, bpjs, status, cancelled_at, bpjs_sync)"
        " values ('KLINIK-A', 'POLI-UMUM', current_date, 1, 'A-001', 'RM-1', 'Siti', $1,"
        " '{\"booking_code\": \"BK-1\"}', 'cancelled', now(), 'pending') returning id",
        payer,
    )
    await owner.execute(
        "insert into queue_audit (queue_id, clinic_id, action, actor_id, actor_name)"
        " values ($1, 'KLINIK-A', 'cancel', 'u-rina', 'Rina')",
        qid,
    )
    return int(qid)


@pytest.fixture
async def owner(database) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database)
    yield conn
    await conn.close()


@pytest.fixture
async def as_api(database) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(role_dsn(database, API_DB_ROLE))
    yield conn
    await conn.close()


@pytest.fixture
async def as_worker(database) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(role_dsn(database, WORKER_DB_ROLE))
    yield conn
    await conn.close()


async def test_api_role_cannot_delete_or_update_audit_rows(owner, as_api):
    qid = await _ticket_with_audit(owner)
    with pytest.raises(REFUSED):
        await as_api.execute("delete from queue_audit where queue_id = $1", qid)
    with pytest.raises(REFUSED):
        await as_api.execute("update queue_audit set actor_name = 'someone else'")
    with pytest.raises(REFUSED):
        await as_api.execute("truncate queue_audit")
    assert await owner.fetchval("select count(*) from queue_audit where queue_id = $1", qid) == 1


async def test_api_role_cannot_delete_tickets_or_rewrite_patient_data(owner, as_api):
    qid = await _ticket_with_audit(owner)
    with pytest.raises(REFUSED):
        await as_api.execute("delete from queue_ticket where id = $1", qid)
    with pytest.raises(REFUSED):
        await as_api.execute("update queue_ticket set patient_name = 'X' where id = $1", qid)
    with pytest.raises(REFUSED):
        await as_api.execute("delete from bpjs_sync_job")
    with pytest.raises(REFUSED):
        await as_api.fetch("select * from dead_letter")


async def test_worker_role_cannot_change_a_tickets_status_only_its_sync_state(owner, as_worker):
    qid = await _ticket_with_audit(owner)
    with pytest.raises(REFUSED):
        await as_worker.execute("update queue_ticket set status = 'waiting' where id = $1", qid)
    with pytest.raises(REFUSED):
        await as_worker.execute("update queue_ticket set cancelled_at = null where id = $1", qid)
    await as_worker.execute(
        "update queue_ticket set bpjs_sync = 'synced', updated_at = now() where id = $1", qid
    )
    row = await owner.fetchrow("select status, bpjs_sync from queue_ticket where id = $1", qid)
    assert (row["status"], row["bpjs_sync"]) == ("cancelled", "synced")


async def test_worker_role_reads_no_audit_trail_or_idempotency_keys(owner, as_worker):
    await _ticket_with_audit(owner)
    for sql in (
        "select * from queue_audit",
        "select * from idempotency_key",
        "insert into queue_audit (queue_id, clinic_id, action, actor_id, actor_name)"
        " values (1, 'K', 'cancel', 'u', 'n')",
        "delete from outbox",
        "insert into queue_ticket (clinic_id, room_id, service_date, ticket_seq, ticket_number,"
        " patient_mrn, patient_name, payer) values ('K', 'R', current_date, 9, 'A', 'M', 'N',"
        " 'UMUM')",
    ):
        with pytest.raises(REFUSED):
            await as_worker.execute(sql)


async def test_service_roles_own_nothing_and_cannot_change_the_schema(as_api, as_worker):
    for conn in (as_api, as_worker):
        for sql in ("drop table queue_audit", "create table x (id int)",
                    "alter table queue_ticket add column x int",
                    "create role intruder"):  # fmt: skip
            with pytest.raises((REFUSED, asyncpg.InvalidSchemaNameError)):
                await conn.execute(sql)


async def test_the_worker_records_and_finishes_a_job_with_its_own_role(owner, as_worker):
    qid = await _ticket_with_audit(owner)
    async with as_worker.transaction():
        await as_worker.execute(
            "insert into bpjs_sync_job (queue_id, cancel_event_id, clinic_id, ticket_number,"
            " service, event_data, first_phase_until, horizon_at)"
            " values ($1, gen_random_uuid(), 'KLINIK-A', 'A-001', 'antreanrs', '{}', now(),"
            " now() + interval '1 day')",
            qid,
        )
        job = await as_worker.fetchrow(
            "select * from bpjs_sync_job where queue_id = $1 for update", qid
        )
        assert job is not None
        await as_worker.execute(
            "update bpjs_sync_job set status = 'synced', attempts = attempts + 1"
            " where queue_id = $1",
            qid,
        )
        await as_worker.execute(
            "insert into outbox (event_id, topic, kafka_key, event_type, payload)"
            " values (gen_random_uuid(), 'bpjs-synced', $1, 'BpjsSynced', '\\x7b7d')",
            str(qid),
        )
        await as_worker.fetch("select id from outbox where published_at is null for update")
        await as_worker.execute("update outbox set published_at = now()")
    assert await as_worker.fetchval("select has_table_privilege('dead_letter', 'INSERT')")


async def test_the_cancel_api_in_the_tests_connects_as_its_own_role(api, database):
    pool = api.client._transport.app.state.ctx.pool  # type: ignore[attr-defined]
    async with pool.acquire() as conn:
        assert await conn.fetchval("select current_user") == API_DB_ROLE
    assert api_env(database, "k", "p")["DATABASE_URL"] == role_dsn(database, API_DB_ROLE)


async def test_a_role_login_set_from_a_scram_verifier_accepts_its_password(infra, database):
    admin = await asyncpg.connect(infra.admin_dsn)
    role, password = f"t_login_{uuid.uuid4().hex[:8]}", "Pr0d-" + uuid.uuid4().hex
    await admin.execute(f"create role {role} nologin")
    try:
        await set_role_login(admin, role, password)
        conn = await asyncpg.connect(role_dsn(database, role, password))
        assert await conn.fetchval("select current_user") == role
        await conn.close()
    finally:
        await admin.execute(f"drop role {role}")
        await admin.close()
