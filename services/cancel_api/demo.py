"""`python -m services.cancel_api.demo`: seed a demo clinic (idempotent) and print demo links."""

import asyncio
from datetime import UTC, datetime

import asyncpg

from services.cancel_api.config import CancelApiSettings
from services.cancel_api.schemas import Patient, RegisterRequest
from services.cancel_api.service import register_ticket
from shared.auth import (
    PERM_CANCEL,
    PERM_CREATE,
    PERM_MANAGE_BPJS,
    PERM_UPDATE,
    Principal,
    issue_dev_token,
)
from shared.clinics import clinic_zone, service_day
from shared.db import create_pool

CLINIC = "KLINIK-DEMO"
TIME_ZONE = "Asia/Jakarta"  # WIB; `python -m shared.clinics set-time-zone` changes it
ROOMS = ("POLI-UMUM", "POLI-GIGI")
PATIENTS = [
    ("Siti Aminah", "BPJS"),
    ("Budi Santoso", "UMUM"),
    ("Dewi Lestari", "BPJS"),
    ("Agus Salim", "ASURANSI"),
    ("Rina Marlina", "BPJS"),
    ("Joko Widodo", "UMUM"),
    ("Maya Sari", "BPJS"),
    ("Hendra Gunawan", "UMUM"),
    ("Putri Ayu", "BPJS"),
    ("Bambang Pamungkas", "BPJS"),
    ("Lina Marlina", "UMUM"),
    ("Yusuf Hidayat", "BPJS"),
]
USERS = [
    ("u-rina", "Rina (petugas pendaftaran)", [PERM_CANCEL, PERM_CREATE, PERM_UPDATE]),
    ("u-budi", "Budi (perawat, tanpa izin batal)", [PERM_CREATE, PERM_UPDATE]),
    ("u-admin", "Admin BPJS", [PERM_CANCEL, PERM_MANAGE_BPJS]),
]


def _bpjs(settings: CancelApiSettings, i: int, day: str) -> dict[str, str]:
    if settings.bpjs_service == "antreanfktp":
        return {"card_number": f"{1000000000000 + i:013d}", "poli_code": "001", "visit_date": day}
    return {"booking_code": f"{day.replace('-', '')}DEMO{i:03d}"}


async def seed(settings: CancelApiSettings) -> int:
    pool = await create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=2)
    seeder = Principal("u-seed", "Data demo", CLINIC, frozenset({PERM_CREATE}))
    made = 0
    try:
        async with pool.acquire() as conn:
            await _set_zone(conn)
            zone = await clinic_zone(conn, CLINIC, settings.clinic_timezone)
            today = service_day(zone, datetime.now(UTC))
            # Today's queue (the list shows the clinic's today): a new day gets new tickets.
            waiting = await conn.fetchval(
                "select count(*) from queue_ticket where clinic_id = $1 and status = 'waiting'"
                " and service_date = $2",
                CLINIC,
                today,
            )
            day = str(today)
        if waiting >= len(PATIENTS):
            return 0
        for i, (name, payer) in enumerate(PATIENTS):
            body = RegisterRequest(
                room_id=ROOMS[i % 2],
                patient=Patient(mrn=f"RM-{i + 1:06d}", name=name),
                payer=payer,
                bpjs=_bpjs(settings, i, day) if payer == "BPJS" else None,
            )
            await register_ticket(
                pool,
                seeder,
                body,
                bpjs_service=settings.bpjs_service,
                timezone=settings.clinic_timezone,
                request_id="demo-seed",
            )
            made += 1
    finally:
        await pool.close()
    return made


async def _set_zone(conn: asyncpg.Connection) -> None:
    """The demo clinic's own zone, unless an operator set one (needs the owner's DSN)."""
    try:
        await conn.execute(
            "insert into clinic_setting (clinic_id, time_zone) values ($1, $2)"
            " on conflict (clinic_id) do nothing",
            CLINIC,
            TIME_ZONE,
        )
    except asyncpg.InsufficientPrivilegeError:
        print(f"demo clinic {CLINIC}: time zone not set (DATABASE_URL is not the owner's)")


def main() -> None:
    settings = CancelApiSettings()
    made = asyncio.run(seed(settings))
    secret = settings.jwt_secret
    print(
        f"\ndemo clinic {CLINIC}: {made} new waiting tickets"
        if made
        else f"\ndemo clinic {CLINIC}: ready"
    )
    if secret is None:
        print("AUTH_JWKS_URL is set: demo tokens are not available (tokens come from your IdP)")
        return
    base = f"http://127.0.0.1:{settings.port}"
    print(
        "dev token secret (AUTH_JWT_SECRET): "
        + ("<from environment>" if settings.auth_jwt_secret else secret)
    )
    for user_id, name, perms in USERS:
        token = issue_dev_token(
            secret, user_id=user_id, name=name, clinic_id=CLINIC, permissions=perms
        )
        print(f"\n  {name}  [{', '.join(perms)}]")
        print(f"    UI:    {base}/?room={ROOMS[0]}#token={token}")
        print(f"    token: {token}")


if __name__ == "__main__":
    main()
