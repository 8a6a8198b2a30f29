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


WRONG = {
    "signature": (
        BpjsCredentials.of(CREDS.cons_id, "not-the-secret", CREDS.user_key.get_secret_value()),
        "Signature tidak sesuai",
    ),
    "user_key": (
        BpjsCredentials.of(CREDS.cons_id, CREDS.secret_key.get_secret_value(), "not-the-key"),
        "User key tidak valid",
    ),
    "cons_id": (
        BpjsCredentials.of("77777", CREDS.secret_key.get_secret_value(), "x"),
        "X-cons-id tidak terdaftar",
    ),
}


@SERVICES
@pytest.mark.parametrize("kind", list(WRONG))
async def test_each_kind_of_wrong_credentials_is_an_auth_error(
    sim: BpjsSimulator, rs: BpjsClient, fktp: BpjsClient, service: str, kind: str
) -> None:
    seed(sim, service)
    wrong, message = WRONG[kind]
    result = await cancel(service, rs, fktp, creds=wrong)
    assert result.outcome.kind is OutcomeKind.AUTH_ERROR
    assert (result.http_status, result.outcome.code, result.outcome.message) == (200, 201, message)
    assert not result.ok
    assert not is_cancelled(sim, service)


async def test_a_timestamp_computed_in_wib_is_an_auth_error_when_skew_is_checked(
    sim: BpjsSimulator,
) -> None:
    sim.configure(max_clock_skew_s=300)
    sim.seed_booking(BOOKING)
    wib_clock = lambda: time.time() + 7 * 3600  # noqa: E731 - WIB (UTC+7), not UTC
    async with BpjsClient(sim.rs_url, clock=wib_clock) as skewed, BpjsClient(sim.rs_url) as good:
        refused = await skewed.cancel_rs(CREDS, BOOKING, REASON)
        accepted = await good.cancel_rs(CREDS, BOOKING, REASON)
    assert (refused.outcome.kind, refused.outcome.code) == (OutcomeKind.AUTH_ERROR, 201)
    assert refused.outcome.message == "Request expired, waktu tidak sesuai"
    assert accepted.outcome.kind is OutcomeKind.SUCCESS


@SERVICES
@pytest.mark.parametrize("status", [401, 403])
async def test_an_http_401_or_403_gateway_refusal_is_an_auth_error(
    sim: BpjsSimulator, rs: BpjsClient, fktp: BpjsClient, service: str, status: int
) -> None:
    seed(sim, service)
    sim.configure(auth_failure_http_status=status)
    result = await cancel(service, rs, fktp, creds=WRONG["user_key"][0])
    assert (result.http_status, result.outcome.kind) == (status, OutcomeKind.AUTH_ERROR)
    assert result.outcome.message == "User key tidak valid"
    assert not is_cancelled(sim, service)


async def test_simulator_messages_reworded_by_an_operator_are_caught_by_extra_patterns(
    sim: BpjsSimulator,
) -> None:
    sim.configure(bad_signature_message="Kunci API ditolak")
    sim.seed_booking(BOOKING)
    wrong = WRONG["signature"][0]
    extra = [r"kunci\s+api\s+ditolak"]
    async with (
        BpjsClient(sim.rs_url) as plain,
        BpjsClient(sim.rs_url, auth_error_patterns=extra) as tuned,
    ):
        assert (await plain.cancel_rs(wrong, BOOKING, REASON)).outcome.kind is OutcomeKind.REJECTED
        assert (
            await tuned.cancel_rs(wrong, BOOKING, REASON)
        ).outcome.kind is OutcomeKind.AUTH_ERROR
        # Business refusals stay refusals for the tuned client.
        result = await tuned.cancel_rs(CREDS, "UNKNOWN-1", REASON)
    assert (result.outcome.kind, result.outcome.message) == (
        OutcomeKind.REJECTED,
        "Antrean Tidak Ditemukan",
    )


def test_an_invalid_extra_pattern_fails_when_the_client_is_made() -> None:
    with pytest.raises(ValueError, match="auth error pattern"):
        BpjsClient("http://127.0.0.1:9/antreanrs_dev", auth_error_patterns=["("])


@SERVICES
async def test_bpjs_rotating_the_key_makes_calls_auth_errors_until_rotated_back(
    sim: BpjsSimulator, rs: BpjsClient, fktp: BpjsClient, service: str
) -> None:
    seed(sim, service)
    sim.rotate_credentials(secret_key="rotated-at-bpjs")
    refused = await cancel(service, rs, fktp)
    assert (refused.outcome.kind, refused.outcome.message) == (
        OutcomeKind.AUTH_ERROR,
        "Signature tidak sesuai",
    )
    assert not is_cancelled(sim, service)
    sim.restore_credentials()
    accepted = await cancel(service, rs, fktp)
    assert accepted.outcome.kind is OutcomeKind.SUCCESS
    assert applied(sim, service) == 1


async def test_the_new_key_works_after_a_rotation(sim: BpjsSimulator, rs: BpjsClient) -> None:
    sim.seed_booking(BOOKING, tasks={3: 1_700_000_000_000})
    sim.rotate_credentials(secret_key="rotated-at-bpjs", user_key="new-user-key")
    new = BpjsCredentials.of(CREDS.cons_id, "rotated-at-bpjs", "new-user-key")
    assert (await rs.get_list_task(CREDS, BOOKING)).outcome.kind is OutcomeKind.AUTH_ERROR
    listed = await rs.get_list_task(new, BOOKING)
    assert listed.outcome.kind is OutcomeKind.SUCCESS
    assert [t["taskid"] for t in listed.data] == [3]


async def test_not_recorded_cancel_and_task_99_are_ok_but_bpjs_keeps_neither(
    sim: BpjsSimulator, rs: BpjsClient
) -> None:
    sim.seed_booking(BOOKING)
    sim.set_fault("antreanrs:batal", "not_recorded", times=1)
    sim.set_fault("antreanrs:updatewaktu", "not_recorded", times=1)
    cancelled = await rs.cancel_rs(CREDS, BOOKING, REASON)
    task99 = await rs.update_task(CREDS, BOOKING, 99, int(time.time() * 1000))
    assert (cancelled.outcome.kind, cancelled.outcome.message) == (OutcomeKind.SUCCESS, "Ok")
    assert task99.outcome.kind is OutcomeKind.SUCCESS
    listed = await rs.get_list_task(CREDS, BOOKING)
    assert listed.outcome.kind is OutcomeKind.SUCCESS
    assert [t["taskid"] for t in listed.data] == []
    assert not sim.booking(BOOKING)["cancelled"]
    assert applied(sim, "antreanrs") == 0
    # Sent again, both are recorded this time.
    assert (await rs.update_task(CREDS, BOOKING, 99, int(time.time() * 1000))).ok
    assert (await rs.cancel_rs(CREDS, BOOKING, REASON)).outcome.kind is OutcomeKind.SUCCESS
    assert [t["taskid"] for t in (await rs.get_list_task(CREDS, BOOKING)).data] == [99]
    assert applied(sim, "antreanrs") == 1


async def test_get_list_task_of_an_unknown_booking_is_rejected(
    sim: BpjsSimulator, rs: BpjsClient
) -> None:
    result = await rs.get_list_task(CREDS, "UNKNOWN-1")
    assert (result.outcome.kind, result.outcome.message) == (
        OutcomeKind.REJECTED,
        "Antrean Tidak Ditemukan",
    )
    assert result.data is None


@pytest.mark.parametrize("mode", ["http_500", "non_json", "drop_reply", "hang"])
async def test_get_list_task_faults_are_retryable(
    sim: BpjsSimulator, rs: BpjsClient, mode: str
) -> None:
    sim.seed_booking(BOOKING, tasks={99: 1_700_000_000_000})
    sim.set_fault("antreanrs:getlisttask", mode, times=1)
    failed = await rs.get_list_task(CREDS, BOOKING)
    assert failed.outcome.kind is OutcomeKind.RETRYABLE and failed.data is None
    again = await rs.get_list_task(CREDS, BOOKING)
    assert [t["taskid"] for t in again.data] == [99]


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
