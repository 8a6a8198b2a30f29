"""PostgreSQL helpers: the asyncpg pool and the migration runner (plain SQL files, in order)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
from pathlib import Path

import asyncpg
import orjson

from shared.logging import get_logger

log = get_logger(__name__)

# The repository's folder; an installed copy of the package (site-packages) has none beside it,
# so images set MIGRATIONS_DIR.
MIGRATIONS_DIR = Path(
    os.environ.get("MIGRATIONS_DIR") or Path(__file__).resolve().parent.parent / "migrations"
)
_MIGRATION_LOCK = 0x616E7472  # advisory lock id: replicas starting together migrate once

# Errors that mean "the database is not reachable right now" (-> HTTP 503 `unavailable`).
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.InterfaceError,
    # Seen when the server terminated a pooled connection in the middle of a protocol step;
    # the pool discards that connection, so the next request gets a fresh one.
    asyncpg.exceptions.InternalClientError,
)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool `reset` that sends nothing (see `create_pool`)."""


async def create_pool(
    dsn: str,
    *,
    min_size: int = 2,
    max_size: int = 20,
    reset_session: bool = True,
    session_settings: dict[str, str] | None = None,
) -> asyncpg.Pool:
    """The service pool. On release asyncpg always rolls back an open transaction and drops
    listener callbacks; with `reset_session` it also sends `pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL` (one round trip per release). `reset_session=False` is for callers
    that never leave session state behind: only transaction-scoped locks, no SET, no cursors
    outside a transaction, UNLISTEN before a listening connection is released.

    `session_settings` are SET on each new connection and kept for its life, so they need
    `reset_session=False` (RESET ALL would undo them). They are not startup parameters: a
    connection pooler in front (PgBouncer) refuses a startup parameter it does not know."""
    if session_settings and reset_session:
        raise ValueError("session_settings need reset_session=False")
    settings = dict(session_settings or {})

    async def init(conn: asyncpg.Connection) -> None:
        await _init_connection(conn)
        for name, value in settings.items():
            await conn.execute("select set_config($1, $2, false)", name, value)

    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=init,
        reset=None if reset_session else _keep_session,
        command_timeout=30,
        timeout=5,
    )
    assert pool is not None
    return pool


# How long a stopping service waits for its connections to come back and close cleanly. A
# shutdown must end: compose and Kubernetes kill a container that outstays its grace period
# (10 s by default), and a hung shutdown also hides whatever held the connection.
POOL_CLOSE_TIMEOUT_S = 8.0


async def close_pool(pool: asyncpg.Pool, *, grace_s: float | None = None) -> None:
    """Close `pool` gracefully; if a connection is still held after `grace_s` seconds (default
    POOL_CLOSE_TIMEOUT_S), log it as an error and terminate every connection."""
    bound = POOL_CLOSE_TIMEOUT_S if grace_s is None else grace_s
    closing = asyncio.ensure_future(pool.close())
    done, _ = await asyncio.wait([closing], timeout=bound)
    if not done:
        held = pool.get_size() - pool.get_idle_size()
        log.error("db_pool_close_timed_out", timeout_s=bound, connections_in_use=held)
        pool.terminate()  # releases every holder, so the graceful close ends too
    await asyncio.gather(closing, return_exceptions=True)


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    return sorted(p for p in directory.glob("*.sql") if p.name[:4].isdigit())


async def migrate(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the migrations not yet recorded in `schema_migrations`; return their names."""
    files = migration_files(directory)
    if not files:
        # An empty list would report "up to date" on a database that has no schema at all.
        raise RuntimeError(f"no migrations in {directory}: set MIGRATIONS_DIR to the folder")
    conn = await asyncpg.connect(dsn, timeout=10)
    applied: list[str] = []
    try:
        await conn.execute("select pg_advisory_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "create table if not exists schema_migrations ("
            " name text primary key, checksum text not null,"
            " applied_at timestamptz not null default now())"
        )
        done = {
            r["name"]: r["checksum"] for r in await conn.fetch("select * from schema_migrations")
        }
        for path in files:
            sql = path.read_text()
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if path.name in done:
                if done[path.name] != checksum:
                    raise RuntimeError(f"migration {path.name} changed after it was applied")
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "insert into schema_migrations (name, checksum) values ($1, $2)",
                    path.name,
                    checksum,
                )
            applied.append(path.name)
    finally:
        await conn.execute("select pg_advisory_unlock($1)", _MIGRATION_LOCK)
        await conn.close()
    return applied


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of `password` (what `ALTER ROLE ... PASSWORD` stores),
    so a password can be set without its clear text reaching the server or its logs."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


async def set_role_login(conn: asyncpg.Connection, role: str, password: str) -> None:
    """Let `role` log in with `password` (the migrating user needs CREATEROLE)."""
    quoted = await conn.fetchval("select quote_ident($1)", role)
    await conn.execute(f"alter role {quoted} login password '{scram_verifier(password)}'")
