"""Each clinic's own time zone (WIB, WITA, WIT) and service day; `python -m shared.clinics`."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, date, datetime, timedelta
from typing import ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from shared.config import BaseServiceSettings, load_settings

SERVICE = "clinics"
# Indonesia's three zones; any IANA zone is accepted (a deployment may serve clinics abroad).
INDONESIA = {"Asia/Jakarta": "WIB", "Asia/Pontianak": "WIB", "Asia/Makassar": "WITA",
             "Asia/Jayapura": "WIT"}  # fmt: skip
CACHE_S = 300.0  # a changed zone applies within this long in every running service


class UnknownZone(ValueError):
    """Not an IANA time zone name (code `unknown_time_zone`)."""

    code = "unknown_time_zone"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"Zona waktu tidak dikenal: {name[:64]!r} (gunakan nama IANA, mis. Asia/Jakarta"
            " untuk WIB, Asia/Makassar untuk WITA, Asia/Jayapura untuk WIT)"
        )


def zone(name: str) -> ZoneInfo:
    """The IANA zone `name`, or UnknownZone (also for paths and other names zoneinfo would try)."""
    if not name or name != name.strip() or name.startswith(("/", ".")) or ".." in name:
        raise UnknownZone(name)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise UnknownZone(name) from exc


def service_day(tz: ZoneInfo, at: datetime) -> date:
    """The clinic's day at the instant `at` (an aware datetime)."""
    return at.astimezone(tz).date()


def day_bounds(tz: ZoneInfo, day: date) -> tuple[datetime, datetime]:
    """[start, end) of the clinic's day `day` in UTC (a day of a zone change is not 24 h)."""
    end = _midnight(tz, day + timedelta(days=1)) if day < date.max else _LAST
    return _midnight(tz, day), end


_LAST = datetime.max.replace(tzinfo=UTC)


def _midnight(tz: ZoneInfo, day: date) -> datetime:
    try:
        return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)
    except OverflowError:  # 0001-01-01 east of UTC: the earliest instant there is
        return datetime.min.replace(tzinfo=UTC)


class ZoneCache:
    """Clinic zones read from `clinic_setting`, each remembered for `ttl_s`. One per service
    instance (the API's context, the worker): never shared between databases."""

    def __init__(self, ttl_s: float = CACHE_S) -> None:
        self.ttl_s = ttl_s
        self._zones: dict[str, tuple[float, str | None]] = {}

    def get(self, clinic_id: str) -> tuple[bool, str | None]:
        hit = self._zones.get(clinic_id)
        if hit is None or hit[0] < time.monotonic():
            return False, None
        return True, hit[1]

    def put(self, clinic_id: str, name: str | None) -> None:
        if len(self._zones) > 10_000:  # bounded: clinic ids come from tokens
            self._zones.clear()
        self._zones[clinic_id] = (time.monotonic() + self.ttl_s, name)


async def clinic_zone(
    conn: asyncpg.Connection,
    clinic_id: str,
    default: str | ZoneInfo,
    cache: ZoneCache | None = None,
) -> ZoneInfo:
    """The clinic's zone from `clinic_setting`, else `default` (the deployment's CLINIC_TIMEZONE).
    A stored name that is no longer a valid zone falls back to the default as well."""
    found, name = cache.get(clinic_id) if cache is not None else (False, None)
    if not found:
        name = await conn.fetchval(
            "select time_zone from clinic_setting where clinic_id = $1", clinic_id
        )
        if cache is not None:
            cache.put(clinic_id, name)
    if name is not None:
        try:
            return zone(name)
        except UnknownZone:
            pass
    return default if isinstance(default, ZoneInfo) else zone(default)


async def set_time_zone(conn: asyncpg.Connection, clinic_id: str, name: str) -> ZoneInfo:
    tz = zone(name)
    await conn.execute(
        "insert into clinic_setting (clinic_id, time_zone) values ($1, $2)"
        " on conflict (clinic_id) do update set time_zone = excluded.time_zone,"
        " updated_at = now()",
        clinic_id,
        tz.key,
    )
    return tz


async def list_zones(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "select clinic_id, time_zone, updated_at from clinic_setting order by clinic_id"
    )
    return rows


class ClinicsSettings(BaseServiceSettings):
    """The operator command connects as the owner (DATABASE_URL); it uses no Kafka or tokens."""

    uses_auth: ClassVar[bool] = False
    uses_kafka: ClassVar[bool] = False


def _label(name: str) -> str:
    return f"{name} ({INDONESIA[name]})" if name in INDONESIA else name


async def _run(args: argparse.Namespace, dsn: str) -> int:
    if args.command == "set-time-zone":
        try:
            tz = zone(args.zone)
        except UnknownZone as exc:
            sys.stderr.write(f"{UnknownZone.code}: {exc}\n")
            return 2
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        if args.command == "set-time-zone":
            await set_time_zone(conn, args.clinic_id, tz.key)
            print(f"{args.clinic_id}: {_label(tz.key)} (berlaku dalam {CACHE_S:.0f} detik)")
        else:
            for row in await list_zones(conn):
                print(f"{row['clinic_id']}\t{_label(row['time_zone'])}")
    finally:
        await conn.close()
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m shared.clinics",
        description="Clinic time zones (clinics without one use CLINIC_TIMEZONE).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    set_zone = commands.add_parser("set-time-zone", help="set a clinic's IANA time zone")
    set_zone.add_argument("clinic_id")
    set_zone.add_argument("zone", help="e.g. Asia/Jakarta (WIB), Asia/Makassar (WITA)")
    commands.add_parser("list", help="clinics with their own time zone")
    args = parser.parse_args(argv)
    settings = load_settings(ClinicsSettings, SERVICE)
    raise SystemExit(asyncio.run(_run(args, settings.database_url.get_secret_value())))


if __name__ == "__main__":
    main()
