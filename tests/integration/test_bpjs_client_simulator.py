"""The BPJS client against the simulator over real HTTP, for antreanrs and antreanfktp."""

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.bpjs import DEV_CREDENTIALS, BpjsClient, BpjsCredentials, CallResult, OutcomeKind
from tests.fixtures.bpjs_sim import BpjsSimulator

pytestmark = pytest.mark.integration

CREDS = DEV_CREDENTIALS
BOOKING = "16032021A001"
FKTP = ("2026-11-27", "001", "0000045258563")
FKTP_KEY = "|".join(FKTP)
READ_TIMEOUT = 1.0
REASON = "Pasien tidak hadir"


@pytest.fixture
async def rs(sim: BpjsSimulator) -> AsyncIterator[BpjsClient]:
    async with BpjsClient(sim.rs_url, service="antreanrs", read_timeout=READ_TIMEOUT) as client:
        yield client


@pytest.fixture
async def fktp(sim: BpjsSimulator) -> AsyncIterator[BpjsClient]:
    async with BpjsClient(sim.fktp_url, service="antreanfktp", read_timeout=READ_TIMEOUT) as client:
        yield client


def seed(sim: BpjsSimulator, service: str, **state: Any) -> None:
    if service == "antreanrs":
        sim.seed_booking(BOOKING, **state)
    else:
        sim.seed_fktp(*FKTP, **state)


async def cancel(service: str, rs: BpjsClient, fktp: BpjsClient, **kw: Any) -> CallResult:
    creds = kw.get("creds", CREDS)
    if service == "antreanrs":
        return await rs.cancel_rs(creds, BOOKING, REASON)
    return await fktp.cancel_fktp(creds, *FKTP, REASON)


def is_cancelled(sim: BpjsSimulator, service: str) -> bool:
    state = sim.state()
    if service == "antreanrs":
        return bool(state["bookings"].get(BOOKING, {}).get("cancelled"))
    return any(e["cancelled"] for e in state["fktp"] if e["nomorkartu"] == FKTP[2])


def applied(sim: BpjsSimulator, service: str) -> int:
    return sim.applied_cancellations(service, BOOKING if service == "antreanrs" else FKTP_KEY)


SERVICES = pytest.mark.parametrize("service", ["antreanrs", "antreanfktp"])


@SERVICES
async def test_cancel_of_a_waiting_booking_succeeds_and_is_applied_once(
    sim: BpjsSimulator, rs: BpjsClient, fktp: BpjsClient, service: str
) -> None:
    seed(sim, service)
    result = await cancel(service, rs, fktp)
    assert result.outcome.kind is OutcomeKind.SUCCESS
    assert (result.http_status, result.outcome.code, result.outcome.message) == (200, 200, "Ok")
    assert result.ok and result.elapsed < READ_TIMEOUT
    assert is_cancelled(sim, service)
    assert applied(sim, service) == 1


async def test_fktp_reply_uses_metadata_with_capital_d_and_code_1_counts_as_success(
    sim: BpjsSimulator, fktp: BpjsClient
) -> None:
    sim.configure(fktp_ok_code=1)
    sim.seed_fktp(*FKTP)
    result = await fktp.cancel_fktp(CREDS, *FKTP, REASON)
    assert '"metaData"' in result.body_excerpt
    assert (result.outcome.kind, result.outcome.code) == (OutcomeKind.SUCCESS, 1)


async def test_booking_code_with_slashes_is_cancelled(sim: BpjsSimulator, rs: BpjsClient) -> None:
    sim.seed_booking("2024/01/31/000123")
    result = await rs.cancel_rs(CREDS, "2024/01/31/000123", REASON)
    assert result.outcome.kind is OutcomeKind.SUCCESS
    assert sim.booking("2024/01/31/000123")["cancelled"]


async def test_each_call_is_signed_with_a_fresh_utc_timestamp(
    sim: BpjsSimulator, rs: BpjsClient
) -> None:
    sim.seed_booking(BOOKING)
    await rs.cancel_rs(CREDS, BOOKING, REASON)
    [logged] = sim.requests_log("antreanrs:batal")
    headers = logged["headers"]
    assert headers["x-cons-id"] == CREDS.cons_id
    assert abs(int(headers["x-timestamp"]) - time.time()) < 60  # UTC epoch, not WIB
    assert headers["content-type"] == "application/json"
    assert logged["body"] == '{"kodebooking":"16032021A001","keterangan":"Pasien tidak hadir"}'


@SERVICES
@pytest.mark.parametrize(
    ("state", "message"),
    [
        (None, "Antrean Tidak Ditemukan"),
        ({"served": True}, "Pasien Sudah Dilayani, Antrean Tidak Dapat Dibatalkan"),
    ],
)
async def test_refused_cancel_is_rejected_with_code_201(
    sim: BpjsSimulator,
    rs: BpjsClient,
    fktp: BpjsClient,
    service: str,
    state: dict[str, Any] | None,
    message: str,
) -> None:
    if state is not None:
        seed(sim, service, **state)
    result = await cancel(service, rs, fktp)
    assert result.outcome.kind is OutcomeKind.REJECTED
    assert (result.outcome.code, result.outcome.message) == (201, message)
    assert not result.ok
    assert applied(sim, service) == 0


@SERVICES
@pytest.mark.parametrize(("mode", "code"), [("201", 201), ("208", 208)])
async def test_already_cancelled_counts_as_done(
    sim: BpjsSimulator, rs: BpjsClient, fktp: BpjsClient, service: str, mode: str, code: int
) -> None:
    sim.configure(already_cancelled_mode=mode)
    seed(sim, service, cancelled=True)
    result = await cancel(service, rs, fktp)
    assert (result.outcome.kind, result.outcome.code) == (OutcomeKind.ALREADY_DONE, code)
    assert result.ok
    assert applied(sim, service) == 0


@SERVICES
@pytest.mark.parametrize(
    ("mode", "status"),
    [("http_500", 500), ("http_502", 502), ("http_504", 504), ("non_json", 200)],
)
async def test_gateway_faults_are_retryable_and_change_nothing(
    sim: BpjsSimulator, rs: BpjsClient, fktp: BpjsClient, service: str, mode: str, status: int
) -> None:
    seed(sim, service)
    sim.set_fault(f"{service}:batal", mode)
    result = await cancel(service, rs, fktp)
    assert result.outcome.kind is OutcomeKind.RETRYABLE
    assert result.http_status == status
    assert not is_cancelled(sim, service)


@SERVICES
async def test_business_201_fault_is_rejected_with_its_message(
    sim: BpjsSimulator, rs: BpjsClient, fktp: BpjsClient, service: str
) -> None:
    seed(sim, service)
    sim.set_fault(f"{service}:batal", "business_201", message="Data tidak valid")
    result = await cancel(service, rs, fktp)
    assert result.outcome.kind is OutcomeKind.REJECTED
    assert (result.outcome.code, result.outcome.message) == (201, "Data tidak valid")
    assert not is_cancelled(sim, service)


async def test_added_latency_still_succeeds(sim: BpjsSimulator, rs: BpjsClient) -> None:
    sim.seed_booking(BOOKING)
    sim.set_fault("antreanrs:batal", "latency", latency_ms=300)
    result = await rs.cancel_rs(CREDS, BOOKING, REASON)
    assert result.outcome.kind is OutcomeKind.SUCCESS
    assert result.elapsed >= 0.3


@SERVICES
async def test_a_hanging_gateway_ends_at_the_read_timeout_as_retryable(
    sim: BpjsSimulator, rs: BpjsClient, fktp: BpjsClient, service: str
) -> None:
    seed(sim, service)
    sim.set_fault("*", "hang")
    started = time.monotonic()
    result = await cancel(service, rs, fktp)
    assert result.outcome.kind is OutcomeKind.RETRYABLE
    assert "Timeout" in result.outcome.detail
    assert result.http_status is None
    assert time.monotonic() - started < READ_TIMEOUT + 5  # generous: it must not hang forever
    assert not is_cancelled(sim, service)


async def test_a_fault_for_the_next_call_only_clears_itself(
    sim: BpjsSimulator, rs: BpjsClient
) -> None:
    sim.seed_booking(BOOKING)
    sim.set_fault("antreanrs:batal", "http_502", times=1)
    first = await rs.cancel_rs(CREDS, BOOKING, REASON)
    second = await rs.cancel_rs(CREDS, BOOKING, REASON)
    assert [first.outcome.kind, second.outcome.kind] == [OutcomeKind.RETRYABLE, OutcomeKind.SUCCESS]


@SERVICES
async def test_reply_dropped_after_apply_then_retry_is_already_done_and_applied_once(
    sim: BpjsSimulator, rs: BpjsClient, fktp: BpjsClient, service: str
) -> None:
    seed(sim, service)
    sim.set_fault(f"{service}:batal", "drop_reply", times=1)
    first = await cancel(service, rs, fktp)
    assert first.outcome.kind is OutcomeKind.RETRYABLE
    assert first.http_status is None and "transport error" in first.outcome.detail
    retry = await cancel(service, rs, fktp)
    assert retry.outcome.kind is OutcomeKind.ALREADY_DONE
    assert applied(sim, service) == 1


@SERVICES
async def test_a_wrong_secret_is_refused_as_bad_signature(
    sim: BpjsSimulator, rs: BpjsClient, fktp: BpjsClient, service: str
) -> None:
    seed(sim, service)
    wrong = BpjsCredentials.of(CREDS.cons_id, "not-the-secret", CREDS.user_key.get_secret_value())
    result = await cancel(service, rs, fktp, creds=wrong)
    assert result.outcome.kind is OutcomeKind.REJECTED
    assert (result.outcome.code, result.outcome.message) == (201, "Signature tidak sesuai")
    assert not is_cancelled(sim, service)


async def test_a_timestamp_computed_in_wib_is_refused_when_skew_is_checked(
    sim: BpjsSimulator,
) -> None:
    sim.configure(max_clock_skew_s=300)
    sim.seed_booking(BOOKING)
    wib_clock = lambda: time.time() + 7 * 3600  # noqa: E731 - WIB (UTC+7), not UTC
    async with BpjsClient(sim.rs_url, clock=wib_clock) as skewed, BpjsClient(sim.rs_url) as good:
        refused = await skewed.cancel_rs(CREDS, BOOKING, REASON)
        accepted = await good.cancel_rs(CREDS, BOOKING, REASON)
    assert (refused.outcome.kind, refused.outcome.code) == (OutcomeKind.REJECTED, 201)
    assert accepted.outcome.kind is OutcomeKind.SUCCESS


async def test_get_list_task_decrypts_with_the_requests_own_timestamp(
    sim: BpjsSimulator, rs: BpjsClient
) -> None:
    sim.seed_booking(BOOKING, tasks={1: 1_700_000_000_000, 3: 1_700_000_600_000})
    result = await rs.get_list_task(CREDS, BOOKING)
    assert result.outcome.kind is OutcomeKind.SUCCESS
    assert [t["taskid"] for t in result.data] == [1, 3]
    assert {t["kodebooking"] for t in result.data} == {BOOKING}
    assert result.data[0]["taskname"] == "mulai waktu tunggu admisi"


async def test_task_99_then_repeat_is_208_and_a_later_task_is_refused(
    sim: BpjsSimulator, rs: BpjsClient
) -> None:
    sim.seed_booking(BOOKING)
    now_ms = int(time.time() * 1000)
    first = await rs.update_task(CREDS, BOOKING, 99, now_ms)
    repeat = await rs.update_task(CREDS, BOOKING, 99, now_ms)
    later = await rs.update_task(CREDS, BOOKING, 5, now_ms)
    assert first.outcome.kind is OutcomeKind.SUCCESS
    assert (repeat.outcome.kind, repeat.outcome.code) == (OutcomeKind.ALREADY_DONE, 208)
    assert repeat.outcome.message == "TaskId=99 sudah ada"
    assert (later.outcome.kind, later.outcome.code) == (OutcomeKind.REJECTED, 201)
    assert "TaskId terakhir 99" in later.outcome.message
    listed = await rs.get_list_task(CREDS, BOOKING)
    assert [t["taskid"] for t in listed.data] == [99]


async def test_add_then_duplicate_add_is_already_done(sim: BpjsSimulator, rs: BpjsClient) -> None:
    booking = {"kodebooking": "B-1", "tanggalperiksa": "2026-11-27", "kodepoli": "INT"}
    first = await rs.add_antrean(CREDS, booking)
    again = await rs.add_antrean(CREDS, booking)
    assert first.outcome.kind is OutcomeKind.SUCCESS
    assert (again.outcome.kind, again.outcome.code) == (OutcomeKind.ALREADY_DONE, 208)


@SERVICES
async def test_form_content_type_with_json_body_works(sim: BpjsSimulator, service: str) -> None:
    seed(sim, service)
    url = sim.rs_url if service == "antreanrs" else sim.fktp_url
    async with BpjsClient(url, service=service, content_type="form") as client:
        if service == "antreanrs":
            result = await client.cancel_rs(CREDS, BOOKING, REASON)
        else:
            result = await client.cancel_fktp(CREDS, *FKTP, REASON)
    assert result.outcome.kind is OutcomeKind.SUCCESS
    [logged] = sim.requests_log(f"{service}:batal")
    assert logged["headers"]["content-type"] == "Application/x-www-form-urlencoded"


async def test_connection_refused_is_retryable_without_raising() -> None:
    async with BpjsClient("http://127.0.0.1:9/antreanrs_dev", connect_timeout=2) as client:
        result = await client.cancel_rs(CREDS, BOOKING, REASON)
    assert result.outcome.kind is OutcomeKind.RETRYABLE
    assert result.http_status is None


async def test_calls_of_the_other_service_are_a_programming_error(fktp: BpjsClient) -> None:
    with pytest.raises(ValueError, match="antreanrs"):
        await fktp.cancel_rs(CREDS, BOOKING, REASON)
