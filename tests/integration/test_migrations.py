"""Migrations apply to a real database, re-apply harmlessly, and refuse an edited migration."""

import shutil
import uuid

import asyncpg
import pytest

from shared.db import MIGRATIONS_DIR, migrate, migration_files
from tests.fixtures.infra import drop_database

pytestmark = pytest.mark.integration


@pytest.fixture
async def empty_db(infra):
    name = f"antrean_m_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(infra.admin_dsn)
    await admin.execute(f'create database "{name}"')
    yield infra.dsn_for(name)
    await drop_database(admin, name)
    await admin.close()


async def test_migrations_apply_in_order_and_reapply_harmlessly(empty_db):
    names = [p.name for p in migration_files()]
    assert await migrate(empty_db) == names
    assert await migrate(empty_db) == []
    conn = await asyncpg.connect(empty_db)
    try:
        recorded = [
            r["name"] for r in await conn.fetch("select name from schema_migrations order by name")
        ]
        tables = {
            r["t"]
            for r in await conn.fetch(
                "select tablename as t from pg_tables where schemaname='public'"
            )
        }
    finally:
        await conn.close()
    assert recorded == names
    assert {"queue_ticket", "queue_audit", "outbox", "idempotency_key", "ticket_counter"} <= tables


async def test_an_edited_migration_is_refused(empty_db, tmp_path):
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, folder)
    await migrate(empty_db, folder)
    first = migration_files(folder)[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(RuntimeError, match="changed"):
        await migrate(empty_db, folder)


async def test_queue_table_has_every_field_of_the_contract(database):
    conn = await asyncpg.connect(database)
    try:
        cols = {
            r["c"]
            for r in await conn.fetch(
                "select column_name as c from information_schema.columns"
                " where table_name='queue_ticket'"
            )
        }
    finally:
        await conn.close()
    assert {
        "id",
        "clinic_id",
        "room_id",
        "ticket_number",
        "patient_mrn",
        "patient_name",
        "payer",
        "bpjs",
        "status",
        "created_at",
        "cancelled_at",
        "cancelled_by_id",
        "cancelled_by_name",
        "reason_code",
        "reason_text",
        "bpjs_sync",
    } <= cols
