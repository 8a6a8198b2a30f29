"""ops/backup for real: the drill proves a copy whole or names what it lost; bad dumps refused."""

import asyncio
import os
import re
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest

from services.cancel_api.schemas import CancelRequest, RegisterRequest
from services.cancel_api.service import cancel_ticket, register_ticket
from shared.auth import Principal
from shared.db import create_pool, migration_files
from shared.outbox import OutboxBell
from shared.sync_job import store
from shared.sync_job.machine import RetryPolicy, new_job
from tests.fixtures.infra import REPO

pytestmark = pytest.mark.integration

TOOLS = REPO / "ops" / "backup"
STAFF = Principal("u-1", "Petugas Loket", "KLINIK-A", frozenset({"queue:cancel"}))


@pytest.fixture
def pg_env(database: str, tmp_path: Path) -> dict[str, str]:
    """The scripts' environment for the test database: libpq variables and a password file."""
    parts = urlsplit(database)
    password = tmp_path / "pgpassword"
    password.write_text(unquote(parts.password or ""))
    password.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
    return env | {
        "PGHOST": parts.hostname or "127.0.0.1",
        "PGPORT": str(parts.port or 5432),
        "PGUSER": unquote(parts.username or ""),
        "PGDATABASE": parts.path.lstrip("/"),
        "PGPASSWORD_FILE": str(password),
        "PGCONNECT_TIMEOUT": "10",
    }


def _register(room: str, payer: str = "UMUM") -> RegisterRequest:
    bpjs = {"booking_code": f"2026/12/02/{uuid.uuid4().hex[:6]}"} if payer == "BPJS" else None
    patient = {"mrn": f"RM-{uuid.uuid4().hex[:6]}", "name": "Siti Aminah"}
    return RegisterRequest.model_validate(
        {"room_id": room, "patient": patient, "payer": payer, "bpjs": bpjs}
    )


async def _new_ticket(pool: asyncpg.Pool, payer: str = "UMUM") -> int:
    row = await register_ticket(
        pool,
        STAFF,
        _register("POLI-UMUM", payer),
        bpjs_service="antreanrs",
        timezone="Asia/Jakarta",
        request_id=None,
    )
    return int(row["id"])


async def _seed(database: str) -> int:
    """Tickets, one BPJS cancellation whose outbox row is unpublished and whose sync job is
    pending (no relay or worker runs here); returns the cancelled ticket's id."""
    pool = await create_pool(database, min_size=1, max_size=2)
    bell = OutboxBell(pool)  # no relay listens here: the row stays unpublished
    try:
        for _ in range(3):
            await _new_ticket(pool)
        queue_id = await _new_ticket(pool, "BPJS")
        await cancel_ticket(
            pool,
            STAFF,
            queue_id,
            CancelRequest(reason_code="no_show"),
            topic="queue-cancelled",
            bell=bell,
            idempotency_key=None,
            request_id=None,
        )
        async with pool.acquire() as conn:
            found = await store.event_of_ticket(conn, queue_id)
            assert found is not None
            event_id, data = found
            job = new_job(datetime.now(UTC), RetryPolicy(), confirmable=True)
            assert await store.insert(conn, data, event_id, job, service="antreanrs")
            assert await conn.fetchval("select count(*) from outbox where published_at is null")
    finally:
        await bell.close()
        await pool.close()
    return queue_id


def _run(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(TOOLS / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


async def _database_exists(database: str, name: str) -> bool:
    conn = await asyncpg.connect(database, timeout=10)
    try:
        return bool(await conn.fetchval("select 1 from pg_database where datname = $1", name))
    finally:
        await conn.close()


def _check(report: str, status: str, check: str, value: str = "") -> bool:
    return bool(re.search(rf"^  {status}\s+{re.escape(check)}\s+{re.escape(value)}", report, re.M))


async def test_restore_drill_proves_the_copy_whole_while_the_api_keeps_writing(database, pg_env):
    await _seed(database)
    scratch = f"drill_{uuid.uuid4().hex[:10]}"
    env = pg_env | {"DRILL_DATABASE": scratch}
    pool = await create_pool(database, min_size=1, max_size=2)
    written = 0
    try:
        drill = await asyncio.create_subprocess_exec(
            "bash",
            str(TOOLS / "restore-drill.sh"),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        waiting = asyncio.ensure_future(drill.communicate())
        while not waiting.done():  # new tickets all through the drill
            await _new_ticket(pool)
            written += 1
        out, err = (b.decode() for b in await asyncio.wait_for(waiting, 240))
    finally:
        await pool.close()
    assert drill.returncode == 0, f"{out}\n{err}"
    assert "restore drill passed" in out
    assert _check(out, "ok", "rows public.queue_audit")
    assert _check(out, "ok", "latest migration", migration_files()[-1].name)
    # The copy is the dump's snapshot: tickets written after it are not in it, and no
    # difference shows for them.
    dumped = re.search(r"^  ok\s+rows public\.queue_ticket\s+(\d+)$", out, re.M)
    assert dumped is not None, out
    conn = await asyncpg.connect(database, timeout=10)
    try:
        now = await conn.fetchval("select count(*) from queue_ticket")
    finally:
        await conn.close()
    assert 4 <= int(dumped[1]) <= now == 4 + written
    assert _check(out, "ok", "outbox unpublished", "1 rows ")
    assert _check(out, "ok", "sync jobs not synced", "1 rows ")
    assert "DIFF" not in out
    assert not await _database_exists(database, scratch)


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ("delete from outbox where published_at is null", ["rows public.outbox"]),
        ("update bpjs_sync_job set status = 'synced'", ["sync jobs not synced"]),
        (
            "delete from queue_audit where id = (select max(id) from queue_audit)",
            ["rows public.queue_audit"],
        ),
    ],
    ids=["unpublished-outbox-row-lost", "pending-sync-job-lost", "audit-row-lost"],
)
async def test_restore_drill_fails_naming_what_the_copy_lost(database, pg_env, damage, named):
    await _seed(database)
    scratch = f"drill_{uuid.uuid4().hex[:10]}"
    proc = _run(
        "restore-drill.sh", pg_env | {"DRILL_DATABASE": scratch, "DRILL_BEFORE_VERIFY_SQL": damage}
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "restore drill FAILED" in proc.stdout
    for check in named:
        assert _check(proc.stdout, "DIFF", check), proc.stdout
    assert not await _database_exists(database, scratch)


async def test_a_damaged_dump_is_refused_loudly_and_nothing_is_restored(database, pg_env, tmp_path):
    await _seed(database)
    env = pg_env | {"BACKUP_DIR": str(tmp_path / "backups")}
    made = _run("backup.sh", env)
    assert made.returncode == 0, made.stderr
    dump = Path(made.stdout.strip())
    checksum = dump.with_name(dump.name + ".sha256")
    assert dump.is_file() and checksum.is_file()

    target = f"restored_{uuid.uuid4().hex[:10]}"
    restore_env = env | {"RESTORE_DATABASE": target}
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    proc = _run("restore.sh", restore_env, str(dump))
    assert proc.returncode != 0
    assert "does not match its checksum" in proc.stderr
    assert not await _database_exists(database, target)

    # Damaged before its checksum was taken: the restore itself fails, in one transaction.
    dump.write_bytes(bytes(data[: len(data) // 2]))
    subprocess.run(["sha256sum", dump.name], cwd=dump.parent, stdout=checksum.open("w"), check=True)
    proc = _run("restore.sh", restore_env, str(dump))
    assert proc.returncode != 0
    assert "pg_restore of" in proc.stderr and "failed" in proc.stderr
    assert not await _database_exists(database, target)


async def test_restore_checks_the_schema_version_and_refuses_a_database_in_use(
    database, pg_env, tmp_path
):
    await _seed(database)
    env = pg_env | {"BACKUP_DIR": str(tmp_path / "backups")}
    dump = Path(_run("backup.sh", env).stdout.strip())
    target = f"restored_{uuid.uuid4().hex[:10]}"
    try:
        proc = _run("restore.sh", env | {"RESTORE_DATABASE": target}, str(dump))
        assert proc.returncode == 0, proc.stderr
        assert re.search(r"schema version \d{4}_\w+\.sql", proc.stderr)
        conn = await asyncpg.connect(database.rsplit("/", 1)[0] + f"/{target}", timeout=10)
        try:
            assert await conn.fetchval("select count(*) from queue_ticket") == 4
        finally:
            await conn.close()
        again = _run("restore.sh", env | {"RESTORE_DATABASE": target}, str(dump))
        assert again.returncode != 0 and "is not empty" in again.stderr
    finally:
        admin = await asyncpg.connect(database, timeout=10)
        await admin.execute(f'drop database if exists "{target}" with (force)')
        await admin.close()

    # A backup that recorded a migration this release does not have (a newer release's).
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    for file in sorted((REPO / "migrations").glob("*.sql"))[:-1]:
        (migrations / file.name).write_text(file.read_text())
    proc = _run(
        "restore.sh",
        env | {"RESTORE_DATABASE": target, "MIGRATIONS_DIR": str(migrations)},
        str(dump),
    )
    assert proc.returncode != 0 and "newer release" in proc.stderr
    assert not await _database_exists(database, target)


async def test_backup_keeps_the_newest_n_dumps_with_their_checksums(database, pg_env, tmp_path):
    folder = tmp_path / "backups"
    folder.mkdir()
    name = pg_env["PGDATABASE"]
    for stamp in ("20200101T000000Z", "20200102T000000Z", "20200103T000000Z"):
        (folder / f"{name}-{stamp}.dump").write_bytes(b"old")
        (folder / f"{name}-{stamp}.dump.sha256").write_text("old")
    (folder / "unrelated.dump").write_bytes(b"kept")
    proc = _run("backup.sh", pg_env | {"BACKUP_DIR": str(folder), "BACKUP_KEEP": "2"})
    assert proc.returncode == 0, proc.stderr
    newest = Path(proc.stdout.strip())
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [
            f"{name}-20200103T000000Z.dump",
            f"{name}-20200103T000000Z.dump.sha256",
            newest.name,
            newest.name + ".sha256",
            "unrelated.dump",
        ]
    )
    check = subprocess.run(["sha256sum", "--check", newest.name + ".sha256"], cwd=folder)
    assert check.returncode == 0
