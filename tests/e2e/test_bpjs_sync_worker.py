"""The BPJS sync worker (faust, real process) with real Kafka, PostgreSQL and the simulator."""

import asyncio
import json

import asyncpg
import pytest

from shared.bpjs import DEV_CREDENTIALS
from tests.fixtures.api import read_events, token
from tests.fixtures.infra import wait_until

pytestmark = pytest.mark.e2e


async def sync_state(dsn: str, queue_id: int) -> dict:
    conn = await asyncpg.connect(dsn)
    try:
        job = await conn.fetchrow("select * from bpjs_sync_job where queue_id = $1", queue_id)
        ticket = await conn.fetchval("select bpjs_sync from queue_ticket where id = $1", queue_id)
    finally:
        await conn.close()
    return {"job": dict(job) if job else None, "ticket": ticket}


async def cancel_bpjs(api, sim, booking: str, *, seed: bool = True, **body) -> dict:
    if seed:
        sim.seed_booking(booking)
    t = await api.register(payer="BPJS", bpjs={"booking_code": booking}, name=booking)
    r = await api.cancel(t["id"], json=body or {"reason_code": "no_show"})
    assert r.status_code == 200, r.text
    return t


def topics(api):
    prefix = api.topic.removesuffix("queue-cancelled")
    return f"{prefix}bpjs-synced", f"{prefix}bpjs-sync-failed"


async def test_bpjs_cancel_is_synced_with_the_reason_then_task_99(
    api, sim, start_worker, database, infra
):
    start_worker()
    t = await cancel_bpjs(
        api, sim, "2024/01/31/000123", reason_code="data_error", reason_text="NIK salah ketik"
    )
    synced_topic, failed_topic = topics(api)
    [(key, event)] = await read_events(infra.kafka, synced_topic, expect=1, timeout=60)
    data = event.payload()
    assert key == str(t["id"]).encode() and data.queue_id == t["id"]
    assert data.attempts == 1 and data.recovered is False and data.bpjs_code == 200
    calls = [
        r
        for r in sim.requests_log()
        if r["path"].endswith(("antrean/batal", "antrean/updatewaktu"))
    ]
    assert [c["path"].rsplit("/", 1)[-1] for c in calls] == ["batal", "updatewaktu"]
    assert json.loads(calls[0]["body"]) == {
        "kodebooking": "2024/01/31/000123",
        "keterangan": "NIK salah ketik",
    }
    assert json.loads(calls[1]["body"])["taskid"] == 99
    assert sim.applied_cancellations("antreanrs", "2024/01/31/000123") == 1
    state = await sync_state(database, t["id"])
    assert state["ticket"] == "synced" and state["job"]["task99_done"]
    assert await read_events(infra.kafka, failed_topic, expect=0, timeout=1, grace=0) == []


async def test_umum_ticket_gets_no_bpjs_call_and_no_result_event(
    api, sim, start_worker, database, infra
):
    start_worker()
    umum = await api.register(payer="UMUM", name="umum")
    assert (await api.cancel(umum["id"])).status_code == 200
    marker = await cancel_bpjs(api, sim, "MARK-1")  # processed after the UMUM one (same flow)
    synced_topic, _ = topics(api)
    events = await read_events(infra.kafka, synced_topic, expect=1, timeout=60)
    assert [e.payload().queue_id for _, e in events] == [marker["id"]]
    assert all("MARK-1" in str(r["body"]) for r in sim.requests_log() if "antrean/" in r["path"])
    assert (await sync_state(database, umum["id"])) == {"job": None, "ticket": None}


async def test_two_502s_then_success_is_synced_on_the_third_attempt(api, sim, start_worker, infra):
    sim.set_fault("antreanrs:batal", "http_502", times=2)
    start_worker()
    t = await cancel_bpjs(api, sim, "BK-502")
    synced_topic, failed_topic = topics(api)
    [(_, event)] = await read_events(infra.kafka, synced_topic, expect=1, timeout=60)
    assert event.payload().attempts == 3 and event.payload().queue_id == t["id"]
    assert event.payload().recovered is False
    assert await read_events(infra.kafka, failed_topic, expect=0, timeout=1, grace=0) == []


async def test_bpjs_down_past_the_first_phase_warns_then_recovers(
    api, sim, start_worker, database, infra
):
    sim.set_fault("antreanrs:batal", "http_504")
    start_worker()
    loop = asyncio.get_running_loop()
    started = loop.time()
    t = await cancel_bpjs(api, sim, "BK-DOWN")
    synced_topic, failed_topic = topics(api)
    [(_, warning)] = await read_events(infra.kafka, failed_topic, expect=1, timeout=30)
    waited = loop.time() - started
    w = warning.payload()
    assert (w.error_kind, w.will_retry, w.queue_id) == ("unreachable", True, t["id"])
    assert waited < 4 + 6  # first phase (4 s here) plus slack for process scheduling
    assert (await sync_state(database, t["id"]))["ticket"] == "failed"
    sim.clear_faults()
    [(_, ok)] = await read_events(infra.kafka, synced_topic, expect=1, timeout=30)
    assert ok.payload().recovered is True
    await wait_until(lambda: _ticket_is(database, t["id"], "synced"), what="ticket synced")
    assert sim.applied_cancellations("antreanrs", "BK-DOWN") == 1


async def _ticket_is(dsn, queue_id, status):
    return (await sync_state(dsn, queue_id))["ticket"] == status


async def test_refusal_fails_at_once_and_is_never_retried(api, sim, start_worker, database, infra):
    sim.seed_booking("BK-SERVED", served=True)
    start_worker()
    t = await cancel_bpjs(api, sim, "BK-SERVED", seed=False)
    _, failed_topic = topics(api)
    [(_, event)] = await read_events(infra.kafka, failed_topic, expect=1, timeout=60)
    f = event.payload()
    assert (f.error_kind, f.will_retry, f.bpjs_code, f.attempts) == ("rejected", False, 201, 1)
    state = await sync_state(database, t["id"])
    assert state["ticket"] == "failed" and state["job"]["will_retry"] is False
    batal_calls = lambda: [r for r in sim.requests_log() if r["path"].endswith("antrean/batal")]  # noqa: E731
    assert len(batal_calls()) == 1
    # A later cancellation whose batal takes 1.5 s (longer than this test's retry interval, 1 s)
    # goes through the same pool; by its BpjsSynced a retry of the refusal would have happened.
    sim.set_fault("antreanrs:batal", "latency", latency_ms=1500, times=1)
    marker = await cancel_bpjs(api, sim, "BK-MARKER")
    synced_topic, _ = topics(api)
    [(_, done)] = await read_events(infra.kafka, synced_topic, expect=1, timeout=60)
    assert done.payload().queue_id == marker["id"]
    assert [json.loads(r["body"])["kodebooking"] for r in batal_calls()] == [
        "BK-SERVED",
        "BK-MARKER",
    ]


async def test_while_bpjs_is_down_for_everyone_the_breaker_holds_calls_and_warnings_still_go_out(
    api, sim, start_worker, infra
):
    import httpx

    sim.set_fault("*", "http_502")
    worker = start_worker(
        SYNC_FIRST_PHASE_S="6",
        BREAKER_THRESHOLD="3",
        BREAKER_COOLDOWN_S="2",
        BREAKER_MAX_COOLDOWN_S="4",
    )
    made = [await cancel_bpjs(api, sim, f"BK-BRK-{i}") for i in range(10)]
    _, failed_topic = topics(api)
    warnings = await read_events(infra.kafka, failed_topic, expect=10, timeout=20)
    assert sorted(e.payload().queue_id for _, e in warnings) == sorted(t["id"] for t in made)
    assert all(e.payload().will_retry for _, e in warnings)
    port = worker.env["WORKER_PORT"]
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert "bpjs_breaker_state 2.0" in metrics or "bpjs_breaker_state 1.0" in metrics
    calls = [r for r in sim.requests_log() if r["path"].endswith("antrean/batal")]
    # Without the breaker 10 jobs x ~8 tries in 6 s would be ~80 calls; held, it is a handful.
    assert len(calls) < 30, len(calls)
    sim.clear_faults()
    synced_topic, _ = topics(api)
    recovered = await read_events(infra.kafka, synced_topic, expect=10, timeout=60)
    assert all(e.payload().recovered for _, e in recovered)


async def test_worker_serves_health_readiness_and_its_metrics(api, sim, start_worker):
    import httpx

    worker = start_worker()
    base = f"http://127.0.0.1:{worker.env['WORKER_PORT']}"
    await cancel_bpjs(api, sim, "BK-METRICS")
    assert httpx.get(f"{base}/healthz").status_code == 200
    await wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, what="worker ready")
    await wait_until(
        lambda: 'bpjs_sync_attempts_total{outcome="synced"}' in httpx.get(f"{base}/metrics").text,
        what="attempt counted",
    )
    text = httpx.get(f"{base}/metrics").text
    for name in (
        "bpjs_call_duration_seconds_bucket",
        "bpjs_sync_jobs_pending",
        "bpjs_sync_oldest_pending_age_seconds",
        "bpjs_breaker_state",
        "bpjs_sync_results_total",
    ):
        assert name in text, name


async def test_fktp_clinic_cancellation_is_synced_without_task_99(
    api, sim, start_worker, infra, database
):
    start_worker(BPJS_SERVICE="antreanfktp", BPJS_BASE_URL=sim.fktp_url)
    sim.seed_fktp("2026-11-27", "001", "0000045258563")
    # The in-process API validates BPJS fields for antreanrs; register the FKTP ticket directly.
    conn = await asyncpg.connect(database)
    qid = await conn.fetchval(
        "insert into queue_ticket (clinic_id, room_id, service_date, ticket_seq, ticket_number,"
        " patient_mrn, patient_name, payer, bpjs) values ('KLINIK-A','POLI-UMUM',current_date,1,"
        " 'U-001','RM-1','Siti','BPJS', $1::jsonb) returning id",
        json.dumps(
            {"card_number": "0000045258563", "poli_code": "001", "visit_date": "2026-11-27"}
        ),
    )
    await conn.close()
    assert (await api.cancel(qid, json={"reason_code": "re_registration"})).status_code == 200
    synced_topic, _ = topics(api)
    [(_, event)] = await read_events(infra.kafka, synced_topic, expect=1, timeout=60)
    assert event.payload().queue_id == qid
    calls = [r for r in sim.requests_log() if "/antrean/" in r["path"]]
    assert [c["path"].rsplit("/", 1)[-1] for c in calls] == ["batal"]
    assert json.loads(calls[0]["body"]) == {
        "tanggalperiksa": "2026-11-27",
        "kodepoli": "001",
        "nomorkartu": "0000045258563",
        "alasan": "Pasien mendaftar ulang",
    }


async def test_each_clinic_signs_with_its_own_credentials_and_one_missing_from_the_file_gets_none(
    api, sim, start_worker, infra, database, tmp_path
):
    # KLINIK-A's own set is the gateway's; KLINIK-B's secret is wrong there; KLINIK-C is not in
    # the file. The default BPJS_* set is wrong too: KLINIK-A syncing proves it signed with its
    # own, and KLINIK-C must never borrow the default.
    creds = tmp_path / "bpjs-credentials.json"
    sim_set = {
        "cons_id": DEV_CREDENTIALS.cons_id,
        "secret_key": DEV_CREDENTIALS.secret_key.get_secret_value(),
        "user_key": DEV_CREDENTIALS.user_key.get_secret_value(),
    }
    creds.write_text(
        json.dumps({"KLINIK-A": sim_set, "KLINIK-B": {**sim_set, "secret_key": "not-the-secret"}})
    )
    start_worker(BPJS_CREDENTIALS_FILE=str(creds), BPJS_SECRET_KEY="wrong-default-secret")
    made = {}
    for clinic in ("A", "B", "C"):
        booking = f"BK-CLINIC-{clinic}"
        sim.seed_booking(booking)
        t = await api.register(
            payer="BPJS", bpjs={"booking_code": booking}, clinic=f"KLINIK-{clinic}"
        )
        assert (await api.cancel(t["id"], tok=token(f"KLINIK-{clinic}"))).status_code == 200
        made[clinic] = t["id"]
    synced_topic, failed_topic = topics(api)
    [(_, ok)] = await read_events(infra.kafka, synced_topic, expect=1, timeout=60)
    failed = await read_events(infra.kafka, failed_topic, expect=2, timeout=60)
    assert ok.payload().queue_id == made["A"]
    by_queue = {e.payload().queue_id: e.payload() for _, e in failed}
    refused, missing = by_queue[made["B"]], by_queue[made["C"]]
    # A refused signature is a credentials problem: warned after the first phase, retried.
    assert refused.error_kind == "auth_error" and "Signature" in refused.error
    assert refused.will_retry is True
    assert (missing.error_kind, missing.will_retry, missing.bpjs_code) == (
        "no_credentials",
        False,
        None,
    )
    assert "KLINIK-C" in missing.error
    sent = [r["body"] for r in sim.requests_log() if "/antrean/" in r["path"]]
    assert not any("BK-CLINIC-C" in body for body in sent)
    assert sim.applied_cancellations("antreanrs", "BK-CLINIC-B") == 0
    state = await sync_state(database, made["C"])
    assert state["ticket"] == "failed" and state["job"]["will_retry"] is False
    assert state["job"]["last_error_kind"] == "no_credentials"
