"""Cancel endpoint: every row of docs/API.md's cancel table, against real PostgreSQL and Kafka."""

import asyncpg
import pytest

from tests.fixtures.api import auth, read_events, token

pytestmark = pytest.mark.integration
CANNOT = "Tidak dapat membatalkan antrean"


async def snapshot(dsn: str, queue_id: int) -> tuple:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("select * from queue_ticket where id = $1", queue_id)
        outbox = await conn.fetchval("select count(*) from outbox")
        audits = await conn.fetchval("select count(*) from queue_audit where action = 'cancel'")
    finally:
        await conn.close()
    return (dict(row) if row else None, outbox, audits)


def assert_problem(r, status: int, code: str, title: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["code"] == code and body["status"] == status
    assert body["title"] and body["detail"] and body["type"]
    if title is not None:
        assert body["title"] == title
    return body


async def test_cancel_of_waiting_bpjs_ticket_commits_ticket_audit_and_one_event(
    api, database, infra
):
    t = await api.register(payer="BPJS", bpjs={"booking_code": "2024/01/31/000123"})
    r = await api.cancel(t["id"], json={"reason_code": "no_show", "reason_text": "tidak datang"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["message"] == "Antrean berhasil dibatalkan"
    assert body["bpjs_sync"] == "pending"
    q = body["queue"]
    assert q["status"] == "cancelled" and q["bpjs_sync"] == "pending"
    assert q["cancelled_by"] == {"user_id": "u-rina", "name": "Rina"}
    assert q["reason_code"] == "no_show" and q["reason_text"] == "tidak datang"
    assert q["cancelled_at"].endswith("Z")
    row, outbox, audits = await snapshot(database, t["id"])
    assert (row["status"], outbox, audits) == ("cancelled", 1, 1)
    events = await read_events(infra.kafka, api.topic, expect=1)
    assert len(events) == 1
    key, event = events[0]
    assert key == str(t["id"]).encode() and event.type == "QueueCancelled"
    data = event.payload()
    assert data.reason_code == "no_show" and data.reason_text == "tidak datang"
    assert data.bpjs == {"booking_code": "2024/01/31/000123"} and data.payer == "BPJS"


async def test_cancel_of_umum_ticket_needs_no_bpjs_sync(api):
    t = await api.register(payer="UMUM")
    r = await api.cancel(t["id"])
    assert r.status_code == 200
    assert r.json()["bpjs_sync"] == "not_required" and r.json()["queue"]["bpjs_sync"] is None
    assert r.json()["queue"]["reason_code"] == "other"  # the default reason


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer not-a-jwt", "Basic dXNlcjpwdw=="])
async def test_cancel_without_a_valid_token_is_401_and_changes_nothing(api, database, header):
    t = await api.register()
    before = await snapshot(database, t["id"])
    headers = {"Authorization": header} if header else {}
    r = await api.client.post(f"/antrian_ruangan/batal/{t['id']}", headers=headers)
    assert_problem(r, 401, "unauthenticated")
    assert await snapshot(database, t["id"]) == before


async def test_cancel_with_an_expired_token_is_401(api, database):
    from shared.auth import issue_dev_token
    from tests.fixtures.api import SECRET

    t = await api.register()
    expired = issue_dev_token(
        SECRET,
        user_id="u",
        name="n",
        clinic_id="KLINIK-A",
        permissions=["cancel antrean"],
        ttl_s=-120,  # beyond the default clock-skew leeway (AUTH_LEEWAY_S, 30 s)
    )
    assert_problem(await api.cancel(t["id"], tok=expired), 401, "unauthenticated")
    assert (await snapshot(database, t["id"]))[0]["status"] == "waiting"


async def test_cancel_without_the_permission_is_403_and_changes_nothing(api, database):
    t = await api.register()
    before = await snapshot(database, t["id"])
    r = await api.cancel(t["id"], tok=token(perms=["create antrean", "update antrean"]))
    assert_problem(r, 403, "forbidden")
    assert await snapshot(database, t["id"]) == before


async def test_permission_is_checked_before_the_ticket_is_looked_up(api):
    # A missing ticket and an existing one give the same 403: nothing about state leaks.
    t = await api.register()
    no_perm = token(perms=[])
    assert_problem(await api.cancel(t["id"], tok=no_perm), 403, "forbidden")
    assert_problem(await api.cancel(999999, tok=no_perm), 403, "forbidden")


async def test_cancel_of_unknown_ticket_is_404_with_the_product_title(api, database):
    r = await api.cancel(987654)
    assert_problem(r, 404, "queue_not_found", CANNOT)
    assert (await snapshot(database, 987654))[1] == 0


async def test_cancel_of_already_cancelled_ticket_is_409_and_writes_no_second_event(api, database):
    t = await api.register(payer="BPJS")
    assert (await api.cancel(t["id"])).status_code == 200
    before = await snapshot(database, t["id"])
    assert_problem(await api.cancel(t["id"]), 409, "queue_already_cancelled", CANNOT)
    assert await snapshot(database, t["id"]) == before


@pytest.mark.parametrize("status", ["called", "accepted", "done"])
async def test_cancel_of_ticket_not_waiting_is_409_naming_the_status(api, database, status):
    t = await api.register()
    conn = await asyncpg.connect(database)
    await conn.execute("update queue_ticket set status = $2 where id = $1", t["id"], status)
    await conn.close()
    before = await snapshot(database, t["id"])
    body = assert_problem(await api.cancel(t["id"]), 409, "queue_not_waiting", CANNOT)
    assert status in body["detail"] and body["queue_status"] == status
    assert await snapshot(database, t["id"]) == before


@pytest.mark.parametrize("raw_id", ["abc", "0", "-1", "1.5", "99999999999999999999", "1%20"])
async def test_malformed_id_is_422_invalid_request(api, raw_id):
    assert_problem(await api.cancel(raw_id), 422, "invalid_request")


@pytest.mark.parametrize(
    "body",
    [
        {"reason_code": "bosan"},
        {"reason_code": "other", "extra": 1},
        {"reason_text": "x" * 501},
        [1],
        "x",
    ],
    ids=["unknown-reason", "unknown-field", "text-too-long", "list", "string"],
)
async def test_malformed_body_is_422_and_changes_nothing(api, database, body):
    t = await api.register()
    before = await snapshot(database, t["id"])
    assert_problem(await api.cancel(t["id"], json=body), 422, "invalid_request")
    assert await snapshot(database, t["id"]) == before


async def test_invalid_json_is_422(api, database):
    t = await api.register()
    r = await api.cancel(
        t["id"], content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_problem(r, 422, "invalid_request")
    assert (await snapshot(database, t["id"]))[0]["status"] == "waiting"


async def test_oversized_body_is_413_and_changes_nothing(api, database):
    t = await api.register()
    before = await snapshot(database, t["id"])
    big = b'{"reason_code": "other", "reason_text": "' + b"x" * 17000 + b'"}'
    r = await api.cancel(t["id"], content=big, headers={"Content-Type": "application/json"})
    assert_problem(r, 413, "payload_too_large")
    assert await snapshot(database, t["id"]) == before


async def test_wrong_content_type_is_415_and_changes_nothing(api, database):
    t = await api.register()
    before = await snapshot(database, t["id"])
    r = await api.cancel(
        t["id"],
        content=b"reason_code=other",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_problem(r, 415, "unsupported_media_type")
    assert await snapshot(database, t["id"]) == before


async def test_cancelled_ticket_can_never_be_moved_again(api):
    t = await api.register()
    await api.cancel(t["id"])
    for path in ("terima", "selesai"):
        r = await api.client.post(f"/antrian_ruangan/{path}/{t['id']}", headers=auth(token()))
        assert_problem(r, 409, "invalid_transition")
    assert (await api.client.get(f"/antrian_ruangan/{t['id']}", headers=auth(token()))).json()[
        "status"
    ] == "cancelled"
