"""Idempotency, tenant isolation, registration numbering, transitions and database outages."""

import asyncio

import asyncpg
import httpx
import pytest

from services.cancel_api.app import create_app
from services.cancel_api.config import CancelApiSettings
from services.cancel_api.schemas import CancelResponse
from tests.fixtures.api import api_env, auth, read_events, token
from tests.fixtures.infra import free_port

pytestmark = pytest.mark.integration


async def test_same_idempotency_key_twice_gives_identical_bodies_and_one_event(
    api, database, infra
):
    t = await api.register(payer="BPJS")
    key = {"Idempotency-Key": "retry-abc-1"}
    first = await api.cancel(t["id"], json={"reason_code": "no_show"}, headers=key)
    second = await api.cancel(t["id"], json={"reason_code": "no_show"}, headers=key)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    events = await read_events(infra.kafka, api.topic, expect=1)
    assert len(events) == 1
    conn = await asyncpg.connect(database)
    assert await conn.fetchval("select count(*) from queue_audit where action='cancel'") == 1
    await conn.close()


async def test_same_idempotency_key_for_another_ticket_or_body_is_refused(api, database):
    a = await api.register(name="A")
    b = await api.register(name="B")
    key = {"Idempotency-Key": "k-1"}
    assert (await api.cancel(a["id"], headers=key)).status_code == 200
    r = await api.cancel(b["id"], headers=key)
    assert r.status_code == 422 and r.json()["code"] == "idempotency_key_reused"
    r = await api.cancel(a["id"], headers=key, json={"reason_code": "data_error"})
    assert r.status_code == 422 and r.json()["code"] == "idempotency_key_reused"
    got = await api.client.get(f"/antrian_ruangan/{b['id']}", headers=auth(token()))
    assert got.json()["status"] == "waiting"


async def test_idempotency_keys_are_per_user(api):
    a = await api.register(name="A")
    b = await api.register(name="B")
    key = {"Idempotency-Key": "shared-key"}
    assert (await api.cancel(a["id"], headers=key)).status_code == 200
    other_user = token(user="u-budi", name="Budi")
    assert (await api.cancel(b["id"], tok=other_user, headers=key)).status_code == 200


async def test_concurrent_retries_with_one_key_cancel_once(api, infra):
    t = await api.register()
    key = {"Idempotency-Key": "double-click"}
    rs = await asyncio.gather(*(api.cancel(t["id"], headers=key) for _ in range(5)))
    assert {r.status_code for r in rs} == {200}
    assert len({r.text for r in rs}) == 1
    assert len(await read_events(infra.kafka, api.topic, expect=1)) == 1


async def test_concurrent_cancels_without_a_key_cancel_once_and_refuse_the_rest(
    api, database, infra
):
    t = await api.register(payer="BPJS")
    rs = await asyncio.gather(*(api.cancel(t["id"]) for _ in range(6)))
    assert sorted(r.status_code for r in rs) == [200] + [409] * 5
    assert {r.json()["code"] for r in rs if r.status_code == 409} == {"queue_already_cancelled"}
    conn = await asyncpg.connect(database)
    try:
        audits = await conn.fetchval(
            "select count(*) from queue_audit where queue_id = $1 and action = 'cancel'", t["id"]
        )
        times = await conn.fetchrow(
            "select t.cancelled_at, t.updated_at, a.at from queue_ticket t"
            " join queue_audit a on a.queue_id = t.id and a.action = 'cancel' where t.id = $1",
            t["id"],
        )
    finally:
        await conn.close()
    assert audits == 1 and times["cancelled_at"] == times["updated_at"] == times["at"]
    events = await read_events(infra.kafka, api.topic, expect=1)
    assert len(events) == 1
    body = next(r for r in rs if r.status_code == 200).json()
    data = events[0][1].payload()
    assert data.cancelled_at.isoformat().replace("+00:00", "Z") == body["queue"]["cancelled_at"]
    assert (data.room_id, data.ticket_number, data.payer, data.bpjs) == (
        body["queue"]["room_id"],
        body["queue"]["ticket_number"],
        "BPJS",
        body["queue"]["bpjs"],
    )


async def test_cancel_response_bytes_are_those_of_the_response_model(api):
    t = await api.register(payer="BPJS")
    r = await api.cancel(t["id"], json={"reason_code": "no_show", "reason_text": " é ✓ "})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    expected = CancelResponse.model_validate(r.json()).model_dump_json().encode()
    assert r.content == expected


async def test_user_of_another_clinic_can_neither_read_list_cancel_nor_learn_of_tickets(
    api, database
):
    t = await api.register(clinic="KLINIK-A")
    b_all = token(clinic="KLINIK-B", perms=["cancel antrean", "update antrean", "create antrean"])
    r = await api.client.get(f"/antrian_ruangan/{t['id']}", headers=auth(b_all))
    assert r.status_code == 404 and r.json()["code"] == "queue_not_found"
    r = await api.client.get(
        "/antrian_ruangan", params={"room_id": "POLI-UMUM"}, headers=auth(b_all)
    )
    assert r.status_code == 200 and r.json() == {"items": []}
    missing = await api.cancel(99999999, tok=b_all)
    foreign = await api.cancel(t["id"], tok=b_all)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["code"] == missing.json()["code"] == "queue_not_found"
    for path in ("terima", "selesai"):
        r = await api.client.post(f"/antrian_ruangan/{path}/{t['id']}", headers=auth(b_all))
        assert r.status_code == 404
    conn = await asyncpg.connect(database)
    assert await conn.fetchval("select status from queue_ticket where id=$1", t["id"]) == "waiting"
    assert await conn.fetchval("select count(*) from outbox") == 0
    await conn.close()


async def test_list_returns_waiting_tickets_of_a_room_ordered_by_number(api):
    made = [await api.register(name=f"P{i}") for i in range(3)]
    other_room = await api.register(room="POLI-GIGI", name="G")
    await api.cancel(made[1]["id"])
    r = await api.client.get(
        "/antrian_ruangan", params={"room_id": "POLI-UMUM"}, headers=auth(token())
    )
    assert [q["id"] for q in r.json()["items"]] == [made[0]["id"], made[2]["id"]]
    r = await api.client.get(
        "/antrian_ruangan", params={"status": "cancelled"}, headers=auth(token())
    )
    assert [q["id"] for q in r.json()["items"]] == [made[1]["id"]]
    r = await api.client.get("/antrian_ruangan", headers=auth(token()))
    assert other_room["id"] in [q["id"] for q in r.json()["items"]]
    r = await api.client.get("/antrian_ruangan", params={"status": "gone"}, headers=auth(token()))
    assert r.status_code == 422 and r.json()["code"] == "invalid_request"


async def test_concurrent_registrations_get_distinct_consecutive_numbers_per_room(api):
    made = await asyncio.gather(*(api.register(name=f"P{i}") for i in range(25)))
    numbers = sorted(q["ticket_number"] for q in made)
    assert numbers == [f"U-{i:03d}" for i in range(1, 26)]
    gigi = await api.register(room="POLI-GIGI")
    assert gigi["ticket_number"] == "G-001"
    other_clinic = await api.register(clinic="KLINIK-B")
    assert other_clinic["ticket_number"] == "U-001"


async def test_numbers_are_never_reused_after_a_cancel(api):
    a = await api.register(name="A")
    await api.cancel(a["id"])
    b = await api.register(name="B")
    assert (a["ticket_number"], b["ticket_number"]) == ("U-001", "U-002")


@pytest.mark.parametrize(
    "body",
    [
        {"room_id": "R", "patient": {"mrn": "1", "name": "x"}, "payer": "BPJS"},
        {
            "room_id": "R",
            "patient": {"mrn": "1", "name": "x"},
            "payer": "BPJS",
            "bpjs": {"card_number": "1"},
        },
        {"room_id": "", "patient": {"mrn": "1", "name": "x"}, "payer": "UMUM"},
        {"room_id": "R" * 65, "patient": {"mrn": "1", "name": "x"}, "payer": "UMUM"},
        {"room_id": "R", "patient": {"mrn": "1", "name": "x"}, "payer": "CASH"},
        {
            "room_id": "R",
            "patient": {"mrn": "1", "name": "x"},
            "payer": "UMUM",
            "bpjs": {"booking_code": "x"},
        },
    ],
    ids=[
        "bpjs-missing",
        "bpjs-wrong-service-fields",
        "empty-room",
        "long-room",
        "bad-payer",
        "bpjs-on-umum",
    ],
)
async def test_register_with_bad_input_is_422_and_creates_nothing(api, body):
    r = await api.client.post("/antrian_ruangan", json=body, headers=auth(token()))
    assert r.status_code == 422 and r.json()["code"] == "invalid_request", r.text
    listed = await api.client.get("/antrian_ruangan", headers=auth(token()))
    assert listed.json()["items"] == []


async def test_register_needs_create_permission(api):
    body = {"room_id": "R", "patient": {"mrn": "1", "name": "x"}, "payer": "UMUM"}
    r = await api.client.post(
        "/antrian_ruangan", json=body, headers=auth(token(perms=["cancel antrean"]))
    )
    assert r.status_code == 403 and r.json()["code"] == "forbidden"


async def test_accept_then_finish_moves_a_ticket_forward_and_needs_update_permission(api):
    t = await api.register()
    r = await api.client.post(
        f"/antrian_ruangan/terima/{t['id']}", headers=auth(token(perms=["cancel antrean"]))
    )
    assert r.status_code == 403
    r = await api.client.post(f"/antrian_ruangan/selesai/{t['id']}", headers=auth(token()))
    assert r.status_code == 409 and r.json()["code"] == "invalid_transition"
    r = await api.client.post(f"/antrian_ruangan/terima/{t['id']}", headers=auth(token()))
    assert r.status_code == 200 and r.json()["status"] == "accepted"
    r = await api.client.post(f"/antrian_ruangan/selesai/{t['id']}", headers=auth(token()))
    assert r.status_code == 200 and r.json()["status"] == "done"


async def test_openapi_document_and_ops_endpoints_are_served(api):
    doc = (await api.client.get("/openapi.json")).json()
    assert "/antrian_ruangan/batal/{queue_id}" in doc["paths"]
    assert (await api.client.get("/healthz")).status_code == 200
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": True, "kafka": True}
    metrics = (await api.client.get("/metrics")).text
    assert "outbox_oldest_unpublished_age_seconds" in metrics


async def test_database_unreachable_gives_503_unavailable_and_not_ready(infra, topic_prefix):
    dead = f"postgresql://antrean:antrean@127.0.0.1:{free_port()}/antrean"
    settings = CancelApiSettings(**api_env(dead, infra.kafka, topic_prefix))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api"
        ) as c:
            r = await c.post("/antrian_ruangan/batal/1", headers=auth(token()))
            assert r.status_code == 503 and r.json()["code"] == "unavailable"
            assert r.json()["title"] == "Layanan sedang tidak tersedia, silakan coba lagi"
            r = await c.get("/antrian_ruangan", headers=auth(token()))
            assert r.status_code == 503
            ready = await c.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["database"] is False


async def test_the_api_stays_ready_while_kafka_is_unreachable_and_reports_it(database, infra):
    dead_kafka = f"127.0.0.1:{free_port()}"
    settings = CancelApiSettings(**api_env(database, dead_kafka, "t-nokafka-"))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api"
        ) as c:
            ready = await c.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "checks": {"database": True, "kafka": False}}


async def test_database_connections_killed_midway_give_503_then_recover(api, database):
    t = await api.register()
    admin = await asyncpg.connect(database)
    killed = await admin.fetchval(
        "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity"
        " where datname = current_database() and pid <> pg_backend_pid()) k"
    )
    await admin.close()
    # A pooled connection whose end the client has not read yet fails the one request that
    # takes it (503) and is then discarded, so each killed connection costs at most one 503.
    statuses: list[int] = []
    while not statuses or statuses[-1] == 503:
        assert len(statuses) <= killed, f"no recovery after {statuses}"
        statuses.append((await api.cancel(t["id"])).status_code)
    assert statuses[-1] in (200, 409), statuses
    r = await api.client.get(f"/antrian_ruangan/{t['id']}", headers=auth(token()))
    assert r.json()["status"] == "cancelled"
