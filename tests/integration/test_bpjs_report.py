"""The daily BPJS reconciliation report, its reconcile request, and the clinic's own time zone
(service day of registration and of the ticket list), against real PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from tests.fixtures.api import auth, token

pytestmark = pytest.mark.integration

ADMIN = ["manage bpjs sync"]
DAY = date(2025, 6, 10)
WITA_START = datetime(2025, 6, 9, 16, 0, tzinfo=UTC)  # 10 June 00:00 WITA (UTC+8)
STATES = {"confirmed", "not_recorded", "not_confirmable", "unconfirmed", "failed", "pending",
          "resolved_manually"}  # fmt: skip


def admin(clinic: str = "KLINIK-A") -> dict[str, str]:
    return auth(token(clinic, perms=ADMIN, user="u-adm", name="Admin"))


async def owner(database: str) -> asyncpg.Connection:
    return await asyncpg.connect(database)


async def set_zone(database: str, clinic: str, zone: str) -> None:
    conn = await owner(database)
    try:
        await conn.execute(
            "insert into clinic_setting (clinic_id, time_zone) values ($1, $2)", clinic, zone
        )
    finally:
        await conn.close()


async def cancelled_at(
    api, database: str, name: str, at: datetime, *, clinic: str = "KLINIK-A", room: str = "R1",
    sync: str = "pending", job: dict | None = None,
) -> dict:  # fmt: skip
    """A BPJS ticket registered and cancelled through the API, then moved (as the owner) to have
    been cancelled at `at`, with the ticket's `bpjs_sync` and a job row of `job`'s columns."""
    t = await api.register(payer="BPJS", name=name, clinic=clinic, room=room)
    r = await api.cancel(t["id"], tok=token(clinic))
    assert r.status_code == 200, r.text
    conn = await owner(database)
    try:
        await conn.execute(
            "update queue_ticket set cancelled_at = $2, bpjs_sync = $3 where id = $1",
            t["id"], at, sync,
        )  # fmt: skip
        if job is not None:
            columns = {"status": sync, **job}
            names = ", ".join(columns)
            marks = ", ".join(f"${i}" for i in range(6, 6 + len(columns)))
            fixed = (
                "queue_id, cancel_event_id, clinic_id, ticket_number, service, event_data,"
                " first_phase_until, horizon_at"
            )
            values = "$1, $2, $3, $4, $5, '{}', now(), now() + interval '7 days'"
            sql = f"insert into bpjs_sync_job ({fixed}, {names}) values ({values}, {marks})"  # noqa: S608
            await conn.execute(
                sql,
                t["id"], uuid.uuid4(), clinic, t["ticket_number"], "antreanrs",
                *columns.values(),
            )  # fmt: skip
    finally:
        await conn.close()
    return t


async def seven_states(api, database: str) -> dict[str, dict]:
    """One cancellation of KLINIK-A (WITA) in every report state, all on DAY in WITA."""
    at = iter(WITA_START + timedelta(minutes=30 + 60 * i) for i in range(7))
    done = datetime(2025, 6, 10, 3, 0, tzinfo=UTC)
    return {
        # 00:30 WITA on DAY is still 9 June in WIB: only the clinic's own zone puts it here
        "pending": await cancelled_at(api, database, "Pending", next(at)),
        "confirmed": await cancelled_at(api, database, "Confirmed", next(at), sync="synced", job={
            "confirmable": True, "confirmed_at": done, "readback_at": done,
            "readback_result": "recorded", "attempts": 1, "will_retry": False}),
        "unconfirmed": await cancelled_at(api, database, "Unconfirmed", next(at), sync="synced",
                                          job={"confirmable": True, "attempts": 1}),
        "not_confirmable": await cancelled_at(api, database, "Fktp", next(at), sync="synced",
                                              job={"confirmable": False, "attempts": 1}),
        "not_recorded": await cancelled_at(api, database, "Missing", next(at), sync="failed", job={
            "confirmable": True, "readback_at": done, "readback_result": "not_recorded",
            "last_error_kind": "not_recorded", "attempts": 3, "warned": True}),
        "failed": await cancelled_at(api, database, "Refused", next(at), room="=1+2",
                                     sync="failed", job={
            "last_error_kind": "rejected", "last_error": "=HYPERLINK(\"http://x\")",
            "attempts": 1, "will_retry": False, "warned": True}),
        "resolved_manually": await cancelled_at(api, database, "ByHand", next(at),
                                                sync="resolved_manually",
                                                job={"attempts": 2, "will_retry": False}),
    }  # fmt: skip


async def test_report_lists_each_bpjs_cancellation_of_the_clinics_day_with_its_state_at_bpjs(
    api, database
):
    await set_zone(database, "KLINIK-A", "Asia/Makassar")
    tickets = await seven_states(api, database)
    umum = await api.register(payer="UMUM", name="Umum")  # no BPJS sync: not in the report
    assert (await api.cancel(umum["id"])).status_code == 200
    await api.register(payer="BPJS", name="StillWaiting")  # not cancelled: not in the report

    r = await api.client.get("/bpjs_sync/report", params={"date": "2025-06-10"}, headers=admin())
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert (body["date"], body["time_zone"], body["reconciliation"]) == (
        "2025-06-10",
        "Asia/Makassar",
        None,
    )
    assert body["counts"] == dict.fromkeys(STATES, 1)
    by_id = {i["queue_id"]: i for i in body["items"]}
    assert {t["id"]: s for s, t in tickets.items()} == {q: i["state"] for q, i in by_id.items()}
    times = [i["cancelled_at"] for i in body["items"]]
    assert times == sorted(times)  # in the order they were cancelled
    confirmed = by_id[tickets["confirmed"]["id"]]
    assert confirmed["ticket_number"] == tickets["confirmed"]["ticket_number"]
    assert confirmed["room_id"] == "R1" and confirmed["bpjs"] == {"booking_code": "BK-Confirmed"}
    assert confirmed["cancelled_by"] == {"user_id": "u-rina", "name": "Rina"}
    assert confirmed["confirmable"] is True and confirmed["readback_result"] == "recorded"
    assert confirmed["confirmed_at"] == "2025-06-10T03:00:00Z" == confirmed["readback_at"]
    assert confirmed["attempts"] == 1 and confirmed["bpjs_sync"] == "synced"
    failed = by_id[tickets["failed"]["id"]]
    assert (failed["last_error_kind"], failed["last_error"]) == (
        "rejected",
        '=HYPERLINK("http://x")',
    )
    pending = by_id[tickets["pending"]["id"]]
    assert (pending["attempts"], pending["confirmable"], pending["last_error_kind"]) == (
        0,
        False,
        None,
    )
    assert pending["cancelled_at"] == "2025-06-09T16:30:00Z"

    empty = await api.client.get(
        "/bpjs_sync/report", params={"date": "2025-06-12"}, headers=admin()
    )
    assert empty.json()["items"] == [] and empty.json()["counts"] == dict.fromkeys(STATES, 0)


async def test_report_as_csv_is_a_utf8_download_one_row_each_with_formula_cells_quoted(
    api, database
):
    await set_zone(database, "KLINIK-A", "Asia/Makassar")
    tickets = await seven_states(api, database)
    r = await api.client.get(
        "/bpjs_sync/report?date=2025-06-10", headers={**admin(), "Accept": "text/csv"}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == (
        'attachment; filename="bpjs-report-KLINIK-A-2025-06-10.csv"'
    )
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8"))))
    assert len(rows) == 7
    assert list(rows[0])[:5] == ["state", "queue_id", "ticket_number", "room_id", "booking_code"]
    by_state = {row["state"]: row for row in rows}
    assert by_state.keys() == STATES
    failed = by_state["failed"]
    assert failed["queue_id"] == str(tickets["failed"]["id"])
    assert failed["last_error"] == '\'=HYPERLINK("http://x")'  # a spreadsheet shows it as text
    assert failed["room_id"] == "'=1+2"
    confirmed = by_state["confirmed"]
    assert confirmed["confirmed_at"] == "2025-06-10T11:00:00+08:00"  # the clinic's local time
    assert confirmed["confirmable"] == "true" and confirmed["booking_code"] == "BK-Confirmed"
    assert by_state["pending"]["cancelled_at"] == "2025-06-10T00:30:00+08:00"
    assert by_state["pending"]["last_error_kind"] == ""

    # JSON stays the answer unless CSV is asked for at least as much as JSON
    for accept in ("*/*", "application/json, text/csv;q=0.5"):
        r = await api.client.get(
            "/bpjs_sync/report?date=2025-06-10", headers={**admin(), "Accept": accept}
        )
        assert r.headers["content-type"] == "application/json", accept


async def test_the_report_day_is_the_clinics_own_day_and_other_clinics_never_appear(api, database):
    await set_zone(database, "KLINIK-A", "Asia/Makassar")  # WITA; KLINIK-B: the WIB default
    in_wita = await cancelled_at(api, database, "A1", WITA_START + timedelta(minutes=30))
    # 00:30 WITA on 11 June, still 23:30 WIB on 10 June
    late = WITA_START + timedelta(days=1, minutes=30)
    next_day = await cancelled_at(api, database, "A2", late)
    b_late = await cancelled_at(api, database, "B1", late, clinic="KLINIK-B")
    b_early = await cancelled_at(
        api, database, "B2", WITA_START + timedelta(minutes=30), clinic="KLINIK-B"
    )

    async def ids(clinic: str, day: str) -> list[int]:
        r = await api.client.get("/bpjs_sync/report", params={"date": day}, headers=admin(clinic))
        assert r.status_code == 200, r.text
        return [i["queue_id"] for i in r.json()["items"]]

    assert await ids("KLINIK-A", "2025-06-10") == [in_wita["id"]]
    assert await ids("KLINIK-A", "2025-06-11") == [next_day["id"]]
    assert await ids("KLINIK-B", "2025-06-10") == [b_late["id"]]
    assert await ids("KLINIK-B", "2025-06-09") == [b_early["id"]]
    r = await api.client.get("/bpjs_sync/report?date=2025-06-10", headers=admin("KLINIK-B"))
    assert r.json()["time_zone"] == "Asia/Jakarta"


async def test_report_date_defaults_to_yesterday_in_the_clinics_zone(api, database):
    await set_zone(database, "KLINIK-A", "Pacific/Kiritimati")  # UTC+14
    before = datetime.now(ZoneInfo("Pacific/Kiritimati")).date() - timedelta(days=1)
    r = await api.client.get("/bpjs_sync/report", headers=admin())
    after = datetime.now(ZoneInfo("Pacific/Kiritimati")).date() - timedelta(days=1)
    assert r.status_code == 200, r.text
    assert r.json()["date"] in {before.isoformat(), after.isoformat()}


async def test_report_and_reconcile_need_the_manage_bpjs_sync_permission(api):
    staff = auth(token(perms=["cancel antrean", "create antrean", "update antrean"]))
    for r in (
        await api.client.get("/bpjs_sync/report", headers=staff),
        await api.client.get("/bpjs_sync/report", headers={**staff, "Accept": "text/csv"}),
        await api.client.post("/bpjs_sync/report/reconcile?date=2025-06-10", headers=staff),
    ):
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert (await api.client.get("/bpjs_sync/report")).status_code == 401


@pytest.mark.parametrize(
    "bad", ["2025-6-10", "2025-02-30", "1700000000", "kemarin", "2025-06-10T00:00"]
)
async def test_a_malformed_date_is_422_invalid_request(api, bad):
    for r in (
        await api.client.get("/bpjs_sync/report", params={"date": bad}, headers=admin()),
        await api.client.post("/bpjs_sync/report/reconcile", params={"date": bad}, headers=admin()),
        await api.client.get("/antrian_ruangan", params={"date": bad}, headers=auth(token())),
    ):
        assert r.status_code == 422, r.text
        assert (
            r.json()["code"] == "invalid_request" and r.json()["title"] == "Permintaan tidak valid"
        )


async def test_reconcile_records_the_request_wakes_the_workers_and_the_report_shows_it(
    api, database
):
    listener = await owner(database)
    woken: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("bpjs_job", lambda *args: woken.put_nowait(args[2]))
    try:
        r = await api.client.post("/bpjs_sync/report/reconcile?date=2025-06-10", headers=admin())
        assert r.status_code == 202, r.text
        body = r.json()
        assert (body["date"], body["status"]) == ("2025-06-10", "requested")
        assert "BPJS" in body["message"]
        await asyncio.wait_for(woken.get(), 10)
    finally:
        await listener.close()
    conn = await owner(database)
    try:
        row = await conn.fetchrow("select * from bpjs_reconciliation")
        assert (row["clinic_id"], row["service_date"], row["requested_by"]) == (
            "KLINIK-A",
            DAY,
            "u-adm",
        )
        # the worker finished that day once; a new request starts it over
        await conn.execute(
            "update bpjs_reconciliation set started_at = now(), finished_at = now(),"
            " checked = 4, not_recorded = 1, error = 'x', requested_at = now() - interval '1 h'"
        )
        first = await conn.fetchval("select requested_at from bpjs_reconciliation")
        shown = (await api.client.get("/bpjs_sync/report?date=2025-06-10", headers=admin())).json()
        assert shown["reconciliation"]["checked"] == 4
        assert shown["reconciliation"]["not_recorded"] == 1
        assert shown["reconciliation"]["finished_at"] is not None
        r = await api.client.post("/bpjs_sync/report/reconcile?date=2025-06-10", headers=admin())
        assert r.status_code == 202
        again = await conn.fetchrow("select * from bpjs_reconciliation")
        assert again["requested_at"] > first
        assert (again["started_at"], again["finished_at"], again["error"]) == (None, None, None)
        assert await conn.fetchval("select count(*) from bpjs_reconciliation") == 1
    finally:
        await conn.close()
    other = await api.client.get("/bpjs_sync/report?date=2025-06-10", headers=admin("KLINIK-B"))
    assert other.json()["reconciliation"] is None


async def test_reconcile_of_a_day_not_yet_begun_in_the_clinics_zone_is_refused(api, database):
    await set_zone(database, "KLINIK-A", "Pacific/Pago_Pago")  # UTC-11
    today = datetime.now(ZoneInfo("Pacific/Pago_Pago")).date()
    r = await api.client.post(
        "/bpjs_sync/report/reconcile", params={"date": str(today + timedelta(days=2))},
        headers=admin(),
    )  # fmt: skip
    assert r.status_code == 409 and r.json()["code"] == "date_in_future", r.text
    r = await api.client.post("/bpjs_sync/report/reconcile", headers=admin())  # yesterday
    assert r.status_code == 202
    assert r.json()["date"] in {str(today - timedelta(days=1)), str(today)}


async def test_sync_list_items_carry_the_read_back_columns_of_their_job(api, database):
    when = datetime(2025, 6, 10, 3, 0, tzinfo=UTC)
    ok = await cancelled_at(api, database, "Ok", when, sync="synced", job={
        "confirmable": True, "confirmed_at": when, "readback_at": when,
        "readback_result": "recorded", "origin": "orphan"})  # fmt: skip
    lost = await cancelled_at(api, database, "NoJob", when, sync="pending")
    r = await api.client.get("/bpjs_sync?status=synced", headers=admin())
    sync = next(i["sync"] for i in r.json()["items"] if i["queue"]["id"] == ok["id"])
    assert (sync["confirmable"], sync["confirmed_at"], sync["readback_at"]) == (
        True,
        "2025-06-10T03:00:00Z",
        "2025-06-10T03:00:00Z",
    )
    assert (sync["readback_result"], sync["origin"]) == ("recorded", "orphan")
    r = await api.client.get("/bpjs_sync?status=pending", headers=admin())
    sync = next(i["sync"] for i in r.json()["items"] if i["queue"]["id"] == lost["id"])
    assert (sync["confirmable"], sync["confirmed_at"], sync["readback_result"]) == (
        False,
        None,
        None,
    )
    assert (sync["readback_at"], sync["origin"]) == (None, None)


def _today(zone: str) -> date:
    return datetime.now(ZoneInfo(zone)).date()


async def test_registration_numbers_tickets_by_the_clinics_own_service_day(api, database):
    # UTC+14 and UTC-11: their days always differ, whatever the time of the run
    await set_zone(database, "KLINIK-A", "Pacific/Kiritimati")
    await set_zone(database, "KLINIK-B", "Pacific/Pago_Pago")
    conn = await owner(database)
    try:  # KLINIK-A already numbered 41 tickets on the day it is in Pago Pago: not its day
        await conn.execute(
            "insert into ticket_counter values ('KLINIK-A', 'POLI-UMUM', $1, 41)",
            _today("Pacific/Pago_Pago"),
        )
    finally:
        await conn.close()
    days = {z: {_today(z)} for z in ("Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Jakarta")}
    a = await api.register(clinic="KLINIK-A", name="A")
    b = await api.register(clinic="KLINIK-B", name="B")
    c = await api.register(clinic="KLINIK-C", name="C")  # no zone of its own: CLINIC_TIMEZONE
    for z in days:
        days[z].add(_today(z))
    assert date.fromisoformat(a["service_date"]) in days["Pacific/Kiritimati"]
    assert date.fromisoformat(b["service_date"]) in days["Pacific/Pago_Pago"]
    assert date.fromisoformat(c["service_date"]) in days["Asia/Jakarta"]
    assert a["ticket_number"].endswith("-001")


async def test_ticket_list_shows_the_clinics_today_by_default_and_another_day_on_request(
    api, database
):
    await set_zone(database, "KLINIK-A", "Pacific/Kiritimati")
    old = await api.register(name="Old")
    first = await api.register(name="First")
    second = await api.register(name="Second")
    yesterday = date.fromisoformat(first["service_date"]) - timedelta(days=1)
    conn = await owner(database)
    try:  # still waiting, but from yesterday: not today's queue
        await conn.execute(
            "update queue_ticket set service_date = $2 where id = $1", old["id"], yesterday
        )
    finally:
        await conn.close()
    r = await api.client.get("/antrian_ruangan", headers=auth(token()))
    assert r.status_code == 200, r.text
    assert [i["id"] for i in r.json()["items"]] == [first["id"], second["id"]]
    r = await api.client.get(
        "/antrian_ruangan", params={"date": str(yesterday)}, headers=auth(token())
    )
    assert [i["id"] for i in r.json()["items"]] == [old["id"]]
    r = await api.client.get(
        "/antrian_ruangan",
        params={"date": first["service_date"], "room_id": "POLI-UMUM"},
        headers=auth(token()),
    )
    assert [i["id"] for i in r.json()["items"]] == [first["id"], second["id"]]


async def test_operator_command_sets_and_lists_a_clinics_zone_and_refuses_an_unknown_one(
    api, database
):
    env = {**os.environ, "APP_ENV": "test", "DATABASE_URL": database}

    async def clinics(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.clinics", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode(), err.decode()

    code, _, err = await clinics("set-time-zone", "KLINIK-A", "Asia/Makasar")
    assert code == 2 and "unknown_time_zone: Zona waktu tidak dikenal: 'Asia/Makasar'" in err
    code, out, _ = await clinics("set-time-zone", "KLINIK-A", "Asia/Makassar")
    assert code == 0 and "KLINIK-A: Asia/Makassar (WITA)" in out
    code, out, _ = await clinics("list")
    assert code == 0 and out.splitlines() == ["KLINIK-A\tAsia/Makassar (WITA)"]
    r = await api.client.get("/bpjs_sync/report", headers=admin())
    assert r.json()["time_zone"] == "Asia/Makassar"
