"""No BPJS cancellation left behind: lease heartbeat, auth errors, lost replies, read-back, jobs
for lost events and admin actions without a job (worker process, simulator over HTTP)."""

import contextlib
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from services.cancel_api.app import create_app
from services.cancel_api.config import CancelApiSettings
from shared.events import encode_event, new_event
from tests.e2e.test_bpjs_event_verification import dead_letters, forged, publish
from tests.e2e.test_bpjs_sync_worker import cancel_bpjs, sync_state, topics
from tests.fixtures.api import Api, api_env, auth, read_events, token
from tests.fixtures.infra import wait_until

pytestmark = pytest.mark.e2e
ADMIN = auth(token(perms=["manage bpjs sync"], user="u-admin", name="Admin"))
REFUSED_TITLE = "Status sinkronisasi BPJS tidak dapat diubah"


@contextlib.asynccontextmanager
async def api_app(database, infra, prefix, **extra: str) -> AsyncIterator[Api]:
    """The cancel API in-process with extra settings (e.g. its outbox relay off)."""
    env = api_env(database, infra.kafka_for("api"), prefix, SYNC_FIRST_PHASE_S="4", **extra)
    settings = CancelApiSettings(**env)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Api(client, settings.topic("queue-cancelled"))


@pytest.fixture
async def quiet_api(database, infra, topic_prefix) -> AsyncIterator[Api]:
    """The API with its outbox relay off: its QueueCancelled events never reach Kafka."""
    async with api_app(database, infra, topic_prefix, OUTBOX_RELAY_ENABLED="false") as api:
        yield api


def metric(worker, sample: str) -> float:
    """One sample of the worker's /metrics (`name{labels}`), 0 when absent."""
    text = httpx.get(f"http://127.0.0.1:{worker.env['WORKER_PORT']}/metrics", timeout=5).text
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


def calls(sim, operation: str, booking: str) -> list[dict]:
    """The simulator's logged antreanrs `operation` calls for `booking`."""
    return [
        r
        for r in sim.requests_log()
        if r["route"] == f"antreanrs:{operation}" and booking in r["body"]
    ]


async def ticket_cancel_event_id(dsn: str, queue_id: int) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("select cancel_event_id from queue_ticket where id = $1",
                                       queue_id))  # fmt: skip
    finally:
        await conn.close()


async def test_bpjs_slower_than_the_lease_gets_one_batal_one_task_99_and_one_read_back(
    api, sim, start_worker, database, infra
):
    """Two workers; every call takes 7 s, so one attempt (3 calls) outlasts the 18 s lease.
    Before 875d7bd no lease was extended while calls ran (and no read-back existed): once the
    lease expired the other worker claimed the job and sent task 99 and getlisttask again."""
    slow = {
        "BPJS_CONNECT_TIMEOUT_S": "0.5",
        "BPJS_READ_TIMEOUT_S": "8",  # 1 s more than each call's latency
        "SYNC_MAX_IN_FLIGHT": "1",
        "SYNC_RATE_PER_S": "100",
        "SYNC_LEASE_S": "18",  # 2 * (0.5 + 8) + 1/100 = 17.01 at least
        "SYNC_FIRST_PHASE_S": "60",  # no warning while the slow attempt runs
    }
    for operation in ("batal", "updatewaktu", "getlisttask"):
        sim.set_fault(f"antreanrs:{operation}", "latency", latency_ms=7000)
    workers = [start_worker(WORKER_ID=f"w-lease-{i}", **slow) for i in (1, 2)]
    t = await cancel_bpjs(api, sim, "BK-SLOW")
    synced_topic, failed_topic = topics(api)
    [(_, event)] = await read_events(infra.kafka, synced_topic, expect=1, timeout=90)
    assert event.payload().queue_id == t["id"]
    for operation in ("batal", "updatewaktu", "getlisttask"):
        assert len(calls(sim, operation, "BK-SLOW")) == 1, operation
    assert sim.applied_cancellations("antreanrs", "BK-SLOW") == 1
    extended = sum(metric(w, "bpjs_sync_lease_extensions_total") for w in workers)
    assert extended >= 1
    job = (await sync_state(database, t["id"]))["job"]
    assert job["attempts"] == 1 and job["confirmed_at"] is not None
    assert await read_events(infra.kafka, failed_topic, expect=0, timeout=1, grace=0) == []


@pytest.mark.parametrize("message", [None, "Authentication failed: invalid consumer"])
async def test_a_rotated_key_is_an_auth_error_retried_through_the_breaker_until_it_is_restored(
    message, api, sim, start_worker, database, infra
):
    """BPJS rotated the consumer's secret: every call is refused (HTTP 200, code 201) with the
    simulator's default wording or another one. Before 875d7bd that refusal was a final
    `rejected` failure at the first attempt, counted by the breaker as healthy."""
    if message:
        sim.configure(bad_signature_message=message)
    sim.rotate_credentials(secret_key="rotated-at-bpjs-only")
    worker = start_worker(BREAKER_THRESHOLD="3", BREAKER_COOLDOWN_S="1", BREAKER_MAX_COOLDOWN_S="2")
    t = await cancel_bpjs(api, sim, "BK-KEY")
    await wait_until(
        lambda: metric(worker, "bpjs_breaker_state") == 2,
        timeout=30,
        interval=0.1,
        what="breaker open",
    )
    synced_topic, failed_topic = topics(api)
    [(_, warning)] = await read_events(infra.kafka, failed_topic, expect=1, timeout=30)
    w = warning.payload()
    assert (w.queue_id, w.error_kind, w.will_retry) == (t["id"], "auth_error", True)
    refused = calls(sim, "batal", "BK-KEY")
    assert len(refused) >= 3  # retried, never final
    assert all((message or "Signature tidak sesuai") in r["reply_body"] for r in refused)
    state = await sync_state(database, t["id"])
    assert state["ticket"] == "failed" and state["job"]["will_retry"] is True
    assert state["job"]["last_error_kind"] == "auth_error"
    assert sim.applied_cancellations("antreanrs", "BK-KEY") == 0

    sim.restore_credentials()
    [(_, ok)] = await read_events(infra.kafka, synced_topic, expect=1, timeout=30)
    assert ok.payload().queue_id == t["id"] and ok.payload().recovered is True
    assert sim.applied_cancellations("antreanrs", "BK-KEY") == 1
    await wait_until(lambda: _ticket_is(database, t["id"], "synced"), what="ticket synced")


async def _ticket_is(dsn: str, queue_id: int, status: str) -> bool:
    return (await sync_state(dsn, queue_id))["ticket"] == status


async def test_a_lost_reply_then_a_differently_worded_refusal_is_read_back_and_ends_synced(
    api, sim, start_worker, database, infra
):
    """The first `batal` is applied but its reply is lost; the retry is refused with a wording
    that is not "already cancelled". Before 875d7bd that refusal ended the job `rejected`
    although BPJS had cancelled the booking."""
    sim.set_fault("antreanrs:batal", "drop_reply", times=1)
    sim.set_fault("antreanrs:batal", "business_201", times=1, message="Antrean Tidak Ditemukan")
    start_worker()
    t = await cancel_bpjs(api, sim, "BK-LOST")
    synced_topic, failed_topic = topics(api)
    [(_, ok)] = await read_events(infra.kafka, synced_topic, expect=1, timeout=60)
    assert ok.payload().queue_id == t["id"]
    assert await read_events(infra.kafka, failed_topic, expect=0, timeout=1, grace=0) == []
    job = (await sync_state(database, t["id"]))["job"]
    assert job["status"] == "synced" and job["confirmed_at"] is not None
    assert job["reply_lost"] is True and job["readback_result"] == "recorded"
    assert len(calls(sim, "batal", "BK-LOST")) == 2
    assert len(calls(sim, "updatewaktu", "BK-LOST")) == 1
    assert len(calls(sim, "getlisttask", "BK-LOST")) == 1
    booking = sim.booking("BK-LOST")
    assert booking["cancelled"] is True and "99" in booking["tasks"]
    assert sim.applied_cancellations("antreanrs", "BK-LOST") == 1


async def test_antreanrs_sync_reads_task_99_back_before_it_is_synced(
    api, sim, start_worker, database, infra
):
    """Before 875d7bd nothing read BPJS's record: no getlisttask, no confirmed_at."""
    start_worker()
    t = await cancel_bpjs(api, sim, "BK-READ")
    synced_topic, _ = topics(api)
    [(_, ok)] = await read_events(infra.kafka, synced_topic, expect=1, timeout=60)
    assert ok.payload().queue_id == t["id"]
    made = [r["route"] for r in sim.requests_log() if "BK-READ" in r["body"]]
    assert made == ["antreanrs:batal", "antreanrs:updatewaktu", "antreanrs:getlisttask"]
    job = (await sync_state(database, t["id"]))["job"]
    assert job["confirmable"] is True and job["confirmed_at"] is not None
    assert job["readback_result"] == "recorded"


async def test_task_99_not_recorded_is_sent_again_warns_not_recorded_then_recovers(
    api, sim, start_worker, database, infra
):
    """BPJS answers 200 to task 99 but keeps nothing. Before 875d7bd the 200 was believed:
    BpjsSynced at once, no warning, task 99 never sent again."""
    sim.set_fault("antreanrs:updatewaktu", "not_recorded")  # until cleared
    start_worker()
    t = await cancel_bpjs(api, sim, "BK-NOREC")
    synced_topic, failed_topic = topics(api)
    [(_, warning)] = await read_events(infra.kafka, failed_topic, expect=1, timeout=30)
    w = warning.payload()
    assert (w.queue_id, w.error_kind, w.will_retry) == (t["id"], "not_recorded", True)
    assert (await sync_state(database, t["id"]))["ticket"] == "failed"
    await wait_until(
        lambda: len(calls(sim, "updatewaktu", "BK-NOREC")) >= 2, what="task 99 sent again"
    )
    assert await read_events(infra.kafka, synced_topic, expect=0, timeout=1, grace=0) == []
    assert len(calls(sim, "batal", "BK-NOREC")) == 1

    sim.clear_faults()
    [(_, ok)] = await read_events(infra.kafka, synced_topic, expect=1, timeout=30)
    assert ok.payload().queue_id == t["id"] and ok.payload().recovered is True
    job = (await sync_state(database, t["id"]))["job"]
    assert job["confirmed_at"] is not None and job["readback_result"] == "recorded"
    assert "99" in sim.booking("BK-NOREC")["tasks"]


async def test_antreanfktp_jobs_are_not_confirmable_and_read_nothing_back(
    api, sim, start_worker, database, infra
):
    """antreanfktp has no read API. Before 875d7bd jobs had no `confirmable` column at all."""
    start_worker(BPJS_SERVICE="antreanfktp", BPJS_BASE_URL=sim.fktp_url)
    sim.seed_fktp("2026-11-27", "001", "0000045258563")
    bpjs = '{"card_number": "0000045258563", "poli_code": "001", "visit_date": "2026-11-27"}'
    conn = await asyncpg.connect(database)
    qid = await conn.fetchval(
        "insert into queue_ticket (clinic_id, room_id, service_date, ticket_seq, ticket_number,"
        " patient_mrn, patient_name, payer, bpjs) values ('KLINIK-A','POLI-UMUM',current_date,1,"
        " 'U-001','RM-1','Siti','BPJS', $1::jsonb) returning id",
        bpjs,
    )
    await conn.close()
    assert (await api.cancel(qid, json={"reason_code": "no_show"})).status_code == 200
    [(_, ok)] = await read_events(infra.kafka, topics(api)[0], expect=1, timeout=60)
    assert ok.payload().queue_id == qid
    r = await api.client.get("/bpjs_sync", params={"status": "synced"}, headers=ADMIN)
    [item] = r.json()["items"]
    assert item["queue"]["id"] == qid
    assert item["sync"]["confirmable"] is False
    job = (await sync_state(database, qid))["job"]
    assert job["confirmable"] is False and job["confirmed_at"] is None
    assert [r["route"] for r in sim.requests_log() if "/antrean/" in r["path"]] == [
        "antreanfktp:batal"
    ]


async def test_a_cancellation_whose_event_never_reaches_the_worker_gets_its_job_from_the_row(
    quiet_api, sim, start_worker, database, infra
):
    """Before 875d7bd the ticket stayed `pending` for ever: no job, no call, no warning."""
    worker = start_worker(SYNC_ORPHAN_AFTER_S="2")
    t = await cancel_bpjs(quiet_api, sim, "BK-ORPHAN")
    [(_, ok)] = await read_events(infra.kafka, topics(quiet_api)[0], expect=1, timeout=60)
    assert ok.payload().queue_id == t["id"]
    assert await read_events(infra.kafka, quiet_api.topic, expect=0, timeout=1, grace=0) == []
    job = (await sync_state(database, t["id"]))["job"]
    event_id = await ticket_cancel_event_id(database, t["id"])
    assert job["origin"] == "orphan" and str(job["cancel_event_id"]) == event_id
    assert ok.payload().cancel_event_id == event_id
    assert len(calls(sim, "batal", "BK-ORPHAN")) == 1
    assert sim.applied_cancellations("antreanrs", "BK-ORPHAN") == 1
    assert metric(worker, 'bpjs_sync_orphans_total{handling="job_created"}') == 1


async def test_a_dead_lettered_event_with_the_real_one_lost_still_reaches_bpjs(
    quiet_api, sim, start_worker, database, infra
):
    """The only QueueCancelled the worker sees names another booking (dead-lettered); the real
    one never left the outbox. Before 875d7bd nothing ever synced this ticket."""
    start_worker(SYNC_ORPHAN_AFTER_S="2")
    sim.seed_booking("BK-OTHER")
    t = await cancel_bpjs(quiet_api, sim, "BK-REAL")
    ticket = {"id": t["id"], "clinic": "KLINIK-A", "ticket_number": t["ticket_number"],
              "booking": "BK-OTHER"}  # fmt: skip
    wrong = new_event(forged(ticket), source="/antrean/cancel-api")
    await publish(infra.kafka, quiet_api.topic, [(str(t["id"]).encode(), encode_event(wrong))])
    [(_, ok)] = await read_events(infra.kafka, topics(quiet_api)[0], expect=1, timeout=60)
    assert ok.payload().queue_id == t["id"]
    await wait_until(lambda: dead_letters(database), what="the wrong event dead-lettered")
    assert [r["reason"] for r in await dead_letters(database)] == ["event_mismatch"]
    assert (await sync_state(database, t["id"]))["job"]["origin"] == "orphan"
    assert [r["body"] for r in sim.requests_log() if r["route"] == "antreanrs:batal"] == [
        r["body"] for r in calls(sim, "batal", "BK-REAL")
    ]
    assert len(calls(sim, "batal", "BK-REAL")) == 1
    assert sim.applied_cancellations("antreanrs", "BK-OTHER") == 0


async def test_admin_retry_without_a_job_creates_it_and_finished_jobs_refuse_retry_and_resolve(
    quiet_api, sim, start_worker, database, infra
):
    """Before 875d7bd retry answered that there was no job, and a synced job's retry or
    resolve was not refused with `invalid_transition`."""
    start_worker()
    t = await cancel_bpjs(quiet_api, sim, "BK-RETRY")
    assert (await sync_state(database, t["id"]))["job"] is None
    r = await quiet_api.client.post(f"/bpjs_sync/{t['id']}/retry", headers=ADMIN)
    assert r.status_code == 202, r.text
    [(_, ok)] = await read_events(infra.kafka, topics(quiet_api)[0], expect=1, timeout=60)
    assert ok.payload().queue_id == t["id"]
    assert (await sync_state(database, t["id"]))["job"]["origin"] == "admin"
    assert len(calls(sim, "batal", "BK-RETRY")) == 1

    note = {"json": {"note": "Dibatalkan manual di portal BPJS"}}
    for action, kwargs in (("retry", {}), ("resolve", note)):
        r = await quiet_api.client.post(f"/bpjs_sync/{t['id']}/{action}", headers=ADMIN, **kwargs)
        assert r.status_code == 409, (action, r.text)
        body = r.json()
        assert body["code"] == "invalid_transition" and body["title"] == REFUSED_TITLE
        assert "sudah tersinkron" in body["detail"]
    state = await sync_state(database, t["id"])
    assert state["ticket"] == "synced" and state["job"]["resolved_by_id"] is None


async def test_resolve_before_the_job_exists_then_the_event_arrives_calls_nothing(
    quiet_api, sim, start_worker, database, infra, topic_prefix
):
    """Before 875d7bd resolve needed a job; the job the late event created still called BPJS
    and emitted a result event for a ticket resolved by hand."""
    worker = start_worker()
    t = await cancel_bpjs(quiet_api, sim, "BK-BYHAND")
    r = await quiet_api.client.post(
        f"/bpjs_sync/{t['id']}/resolve", headers=ADMIN, json={"note": "Sudah dibatalkan di portal"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["queue"]["bpjs_sync"] == "resolved_manually"
    job = (await sync_state(database, t["id"]))["job"]
    assert (job["status"], job["origin"], job["resolved_by_id"]) == (
        "resolved_manually",
        "admin",
        "u-admin",
    )
    duplicate = 'bpjs_worker_events_total{handling="duplicate"}'
    # An API with its relay on publishes the outbox row: the real event reaches the worker.
    async with api_app(database, infra, topic_prefix) as api:
        await wait_until(lambda: metric(worker, duplicate) == 1, timeout=60, what="duplicate")
        sentinel = await cancel_bpjs(api, sim, "BK-SENTINEL")
        synced_topic, failed_topic = topics(api)
        [(_, ok)] = await read_events(infra.kafka, synced_topic, expect=1, timeout=60)
    assert ok.payload().queue_id == sentinel["id"]
    assert await read_events(infra.kafka, failed_topic, expect=0, timeout=1, grace=0) == []
    assert calls(sim, "batal", "BK-BYHAND") == []
    state = await sync_state(database, t["id"])
    assert state["ticket"] == "resolved_manually" and state["job"]["status"] == "resolved_manually"
