"""The BPJS simulator over raw HTTP: it checks what the real gateway would and leaks no secret."""

import json
import time
from typing import Any

import httpx
import pytest

from shared.bpjs import DEV_CREDENTIALS, decrypt_response, signature
from tests.fixtures.bpjs_sim import BpjsSimulator

pytestmark = pytest.mark.integration

CONS_ID = DEV_CREDENTIALS.cons_id
SECRET = DEV_CREDENTIALS.secret_key.get_secret_value()
USER_KEY = DEV_CREDENTIALS.user_key.get_secret_value()
BOOKING = "16032021A001"
FKTP_BODY = {
    "tanggalperiksa": "2026-11-27",
    "kodepoli": "001",
    "nomorkartu": "0000045258563",
    "alasan": "Pasien tidak hadir",
}


def headers(
    *,
    cons_id: str = CONS_ID,
    secret: str = SECRET,
    user_key: str = USER_KEY,
    timestamp: str | None = None,
    content_type: str = "application/json",
) -> dict[str, str]:
    ts = timestamp or str(int(time.time()))
    return {
        "X-cons-id": cons_id,
        "X-timestamp": ts,
        "X-signature": signature(cons_id, secret, ts),
        "user_key": user_key,
        "Content-Type": content_type,
    }


def post(url: str, body: Any, hdrs: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, str | bytes) else json.dumps(body)
    return httpx.post(url, content=content, headers=hdrs or headers(), timeout=10)


def meta(response: httpx.Response) -> tuple[int, str]:
    assert response.status_code == 200, response.text
    document = response.json()
    block = document.get("metadata") or document.get("metaData")
    return block["code"], block["message"]


def rs_batal(sim: BpjsSimulator, body: Any, hdrs: dict[str, str] | None = None) -> httpx.Response:
    return post(f"{sim.rs_url}/antrean/batal", body, hdrs)


CANCEL = {"kodebooking": BOOKING, "keterangan": "Pasien tidak hadir"}


AUTH_FAILURES = [
    ({"secret": "wrong-secret"}, "Signature tidak sesuai"),
    ({"user_key": "wrong-user-key"}, "User key tidak valid"),
    ({"cons_id": "99999"}, "X-cons-id tidak terdaftar"),
    ({"timestamp": "not-a-number"}, "Request expired, waktu tidak sesuai"),
]
AUTH_IDS = ["signature", "user_key", "cons_id", "timestamp"]


@pytest.mark.parametrize(("bad", "message"), AUTH_FAILURES, ids=AUTH_IDS)
def test_each_authentication_failure_gets_201_with_its_own_message(
    sim: BpjsSimulator, bad: dict[str, str], message: str
) -> None:
    sim.seed_booking(BOOKING)
    response = rs_batal(sim, CANCEL, headers(**bad))
    assert meta(response) == (201, message)
    assert not sim.booking(BOOKING)["cancelled"]


def test_a_timestamp_outside_the_allowed_skew_gets_the_timestamp_message(
    sim: BpjsSimulator,
) -> None:
    sim.seed_booking(BOOKING)
    sim.configure(max_clock_skew_s=60)
    stale = headers(timestamp=str(int(time.time()) - 7 * 3600))
    assert meta(rs_batal(sim, CANCEL, stale)) == (201, "Request expired, waktu tidak sesuai")
    assert "clock skew" in sim.requests_log()[-1]["note"]
    assert not sim.booking(BOOKING)["cancelled"]


def test_missing_auth_headers_are_refused(sim: BpjsSimulator) -> None:
    sim.seed_booking(BOOKING)
    response = rs_batal(sim, CANCEL, {"Content-Type": "application/json"})
    assert meta(response) == (201, "X-cons-id tidak terdaftar")


@pytest.mark.parametrize(
    ("option", "bad"),
    [
        ("bad_signature_message", {"secret": "wrong"}),
        ("bad_user_key_message", {"user_key": "wrong"}),
        ("unknown_cons_id_message", {"cons_id": "42"}),
        ("bad_timestamp_message", {"timestamp": "x"}),
    ],
)
def test_each_authentication_message_is_configurable(
    sim: BpjsSimulator, option: str, bad: dict[str, str]
) -> None:
    assert sim.configure(**{option: "Authentication failed"})[option] == "Authentication failed"
    response = rs_batal(sim, CANCEL, headers(**bad))
    assert meta(response) == (201, "Authentication failed")


@pytest.mark.parametrize("status", [401, 403])
def test_authentication_failures_may_answer_an_http_error_with_a_json_body(
    sim: BpjsSimulator, status: int
) -> None:
    sim.seed_booking(BOOKING)
    sim.configure(auth_failure_http_status=status)
    response = rs_batal(sim, CANCEL, headers(user_key="wrong"))
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"metadata": {"message": "User key tidak valid", "code": status}}
    fktp = post(f"{sim.fktp_url}/antrean/batal", FKTP_BODY, headers(secret="wrong"))
    assert fktp.status_code == status
    assert fktp.json()["metaData"]["message"] == "Signature tidak sesuai"
    # Good credentials are still answered HTTP 200, and null restores the BPJS behaviour.
    assert meta(rs_batal(sim, CANCEL)) == (200, "Ok")
    sim.configure(auth_failure_http_status=None)
    assert meta(rs_batal(sim, CANCEL, headers(user_key="wrong")))[0] == 201


def test_an_unsupported_auth_failure_status_is_refused(sim: BpjsSimulator) -> None:
    assert sim.control.patch("/config", json={"auth_failure_http_status": 500}).status_code == 422


def test_rotated_credentials_refuse_the_old_ones_until_restored(sim: BpjsSimulator) -> None:
    sim.seed_booking(BOOKING, tasks={3: 1_700_000_000_000})
    rotated = sim.rotate_credentials(secret_key="rotated-secret", user_key="rotated-user-key")
    assert rotated == {"cons_id": CONS_ID, "rotated": True}
    listtask = f"{sim.rs_url}/antrean/getlisttask"
    assert meta(post(listtask, {"kodebooking": BOOKING})) == (201, "Signature tidak sesuai")
    fresh = headers(secret="rotated-secret", user_key="rotated-user-key")
    answer = post(listtask, {"kodebooking": BOOKING}, fresh)
    assert meta(answer) == (200, "Ok")
    # The reply is encrypted with the secret in force, so only the new key reads it.
    tasks = decrypt_response(
        CONS_ID, "rotated-secret", fresh["X-timestamp"], answer.json()["response"]
    )
    assert [t["taskid"] for t in tasks] == [3]
    assert meta(rs_batal(sim, CANCEL, headers(secret="rotated-secret"))) == (
        201,
        "User key tidak valid",
    )
    assert sim.rotate_credentials(cons_id="20002")["cons_id"] == "20002"
    assert meta(rs_batal(sim, CANCEL, fresh)) == (201, "X-cons-id tidak terdaftar")
    assert sim.restore_credentials() == {"cons_id": CONS_ID, "rotated": False}
    assert meta(rs_batal(sim, CANCEL)) == (200, "Ok")


def test_rotated_credentials_are_never_shown_and_reset_restores_them(sim: BpjsSimulator) -> None:
    sim.rotate_credentials(secret_key="rotated-secret-value", user_key="rotated-user-value")
    config = sim.control.get("/config").json()
    assert config["credentials_rotated"] is True
    rs_batal(sim, CANCEL, headers(secret="rotated-secret-value", user_key="rotated-user-value"))
    dumped = json.dumps([config, sim.requests_log()])
    assert "rotated-secret-value" not in dumped and "rotated-user-value" not in dumped
    assert sim.control.patch("/credentials", json={"secret_key": ""}).status_code == 422
    assert sim.control.patch("/credentials", json={"password": "x"}).status_code == 422
    sim.reset()
    assert sim.control.get("/config").json()["credentials_rotated"] is False
    sim.seed_booking(BOOKING)
    assert meta(rs_batal(sim, CANCEL)) == (200, "Ok")


def test_request_wrapper_is_refused_as_missing_fields(sim: BpjsSimulator) -> None:
    sim.seed_booking(BOOKING)
    code, message = meta(rs_batal(sim, {"request": CANCEL}))
    assert code == 201 and "kodebooking" in message
    assert not sim.booking(BOOKING)["cancelled"]


@pytest.mark.parametrize("field", ["kodebooking", "keterangan"])
@pytest.mark.parametrize("how", ["missing", "empty"])
def test_missing_rs_field_is_refused_naming_it(sim: BpjsSimulator, field: str, how: str) -> None:
    sim.seed_booking(BOOKING)
    body = {k: v for k, v in CANCEL.items() if k != field}
    if how == "empty":
        body[field] = "  "
    code, message = meta(rs_batal(sim, body))
    assert code == 201 and field in message


@pytest.mark.parametrize("field", list(FKTP_BODY))
def test_missing_fktp_field_is_refused_naming_it(sim: BpjsSimulator, field: str) -> None:
    sim.seed_fktp("2026-11-27", "001", "0000045258563")
    body = {k: v for k, v in FKTP_BODY.items() if k != field}
    response = post(f"{sim.fktp_url}/antrean/batal", body)
    assert "metaData" in response.json()
    code, message = meta(response)
    assert code == 201 and field in message


@pytest.mark.parametrize(
    ("field", "value"), [("tanggalperiksa", "27-11-2026"), ("nomorkartu", "12345")]
)
def test_malformed_fktp_field_is_refused(sim: BpjsSimulator, field: str, value: str) -> None:
    code, message = meta(post(f"{sim.fktp_url}/antrean/batal", {**FKTP_BODY, field: value}))
    assert code == 201 and field in message


def test_numbers_as_strings_are_accepted(sim: BpjsSimulator) -> None:
    sim.seed_booking("12345")
    url = f"{sim.rs_url}/antrean/updatewaktu"
    body = {"kodebooking": "12345", "taskid": "99", "waktu": "1700000000000"}
    assert meta(post(url, body)) == (200, "Ok")
    assert sim.booking("12345")["tasks"] == {"99": 1700000000000}
    assert meta(rs_batal(sim, {"kodebooking": 12345, "keterangan": "x"})) == (200, "Ok")


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "Application/x-www-form-urlencoded",
        "APPLICATION/JSON; charset=utf-8",
        "application/x-www-form-urlencoded; charset=UTF-8",
    ],
)
def test_both_content_types_with_a_json_body_are_accepted(
    sim: BpjsSimulator, content_type: str
) -> None:
    sim.seed_booking(BOOKING)
    assert meta(rs_batal(sim, CANCEL, headers(content_type=content_type))) == (200, "Ok")


def test_other_content_types_and_non_json_bodies_are_refused(sim: BpjsSimulator) -> None:
    sim.seed_booking(BOOKING)
    assert meta(rs_batal(sim, CANCEL, headers(content_type="text/plain")))[0] == 201
    assert meta(rs_batal(sim, "kodebooking=16032021A001&keterangan=x"))[0] == 201
    assert not sim.booking(BOOKING)["cancelled"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/nope", 404),
        ("POST", "/antreanrs_dev/antrean/nope", 404),
        ("POST", "/antreanfktp_dev/antrean/updatewaktu", 404),
        ("GET", "/antreanrs_dev/antrean/batal", 405),
    ],
)
def test_unknown_paths_get_an_html_error_page(
    sim: BpjsSimulator, method: str, path: str, status: int
) -> None:
    response = httpx.request(method, f"{sim.base_url}{path}", headers=headers(), timeout=10)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.lstrip().startswith("<html>")


def test_request_log_and_config_hold_no_secret_values(sim: BpjsSimulator) -> None:
    sim.seed_booking(BOOKING)
    hdrs = headers()
    rs_batal(sim, CANCEL, hdrs)
    rs_batal(sim, CANCEL, headers(secret="wrong"))
    log = sim.requests_log()
    assert len(log) == 2
    first = log[0]
    assert first["headers"]["x-signature"] == "***" and first["headers"]["user_key"] == "***"
    assert first["headers"]["x-cons-id"] == CONS_ID
    assert json.loads(first["body"]) == CANCEL
    assert first["reply_status"] == 200 and '"code":200' in first["reply_body"]
    assert "X-signature" in log[1]["note"]
    dumped = json.dumps([log, sim.control.get("/config").json()])
    for secret in (SECRET, USER_KEY, hdrs["X-signature"]):
        assert secret not in dumped


def test_getlisttask_response_is_encrypted_with_the_request_timestamp(sim: BpjsSimulator) -> None:
    sim.seed_booking(BOOKING, tasks={3: 1_700_000_000_000})
    hdrs = headers(timestamp=str(int(time.time()) - 5))
    response = post(f"{sim.rs_url}/antrean/getlisttask", {"kodebooking": BOOKING}, hdrs)
    assert meta(response) == (200, "Ok")
    tasks = decrypt_response(CONS_ID, SECRET, hdrs["X-timestamp"], response.json()["response"])
    assert [(t["taskid"], t["kodebooking"]) for t in tasks] == [(3, BOOKING)]


def test_dev_autocreate_cancels_an_unknown_booking(sim: BpjsSimulator) -> None:
    sim.configure(dev_autocreate=True)
    assert meta(rs_batal(sim, CANCEL)) == (200, "Ok")
    assert sim.booking(BOOKING)["autocreated"]


def test_probabilistic_502_fails_some_calls_but_not_all(sim: BpjsSimulator) -> None:
    sim.set_fault("antreanrs:getlisttask", "http_502", probability=0.3)
    sim.seed_booking(BOOKING)
    url = f"{sim.rs_url}/antrean/getlisttask"
    statuses = [post(url, {"kodebooking": BOOKING}).status_code for _ in range(60)]
    assert 0 < statuses.count(502) < 60
    assert set(statuses) == {200, 502}


def test_wildcard_fault_hits_both_services_until_cleared(sim: BpjsSimulator) -> None:
    sim.set_fault("*", "http_504")
    assert rs_batal(sim, CANCEL).status_code == 504
    assert post(f"{sim.fktp_url}/antrean/batal", FKTP_BODY).status_code == 504
    assert sim.clear_faults() == 1
    assert rs_batal(sim, CANCEL).status_code == 200


def test_reset_forgets_state_faults_options_and_log(sim: BpjsSimulator) -> None:
    sim.seed_booking(BOOKING)
    sim.set_fault("*", "http_500")
    sim.configure(already_cancelled_mode="208")
    rs_batal(sim, CANCEL)
    sim.reset()
    assert sim.state() == {"bookings": {}, "fktp": []}
    assert sim.requests_log() == [] and sim.stats()["calls"] == {}
    assert sim.control.get("/faults").json() == []
    assert sim.control.get("/config").json()["already_cancelled_mode"] == "201"


def test_seeded_served_booking_has_task_5(sim: BpjsSimulator) -> None:
    booking = sim.seed_booking(BOOKING, served=True)
    assert "5" in booking["tasks"]


def test_healthz(sim: BpjsSimulator) -> None:
    assert httpx.get(f"{sim.base_url}/healthz", timeout=5).status_code == 200


def listtask(sim: BpjsSimulator, kodebooking: str = BOOKING) -> httpx.Response:
    return post(f"{sim.rs_url}/antrean/getlisttask", {"kodebooking": kodebooking})


def listed_tasks(response: httpx.Response) -> list[int]:
    assert meta(response) == (200, "Ok")
    ts = response.request.headers["X-timestamp"]
    return [t["taskid"] for t in decrypt_response(CONS_ID, SECRET, ts, response.json()["response"])]


def updatewaktu(sim: BpjsSimulator, taskid: int) -> httpx.Response:
    body = {"kodebooking": BOOKING, "taskid": taskid, "waktu": int(time.time() * 1000)}
    return post(f"{sim.rs_url}/antrean/updatewaktu", body)


def test_getlisttask_lists_task_99_once_recorded(sim: BpjsSimulator) -> None:
    sim.seed_booking(BOOKING, tasks={1: 1_700_000_000_000})
    assert listed_tasks(listtask(sim)) == [1]
    assert meta(rs_batal(sim, CANCEL)) == (200, "Ok")
    assert meta(updatewaktu(sim, 99)) == (200, "Ok")
    assert listed_tasks(listtask(sim)) == [1, 99]


def test_getlisttask_of_an_unknown_booking_is_201_without_response(sim: BpjsSimulator) -> None:
    sim.configure(dev_autocreate=True)  # reading never creates a booking, even in dev mode
    response = listtask(sim, "UNKNOWN-1")
    assert meta(response) == (201, "Antrean Tidak Ditemukan")
    assert "response" not in response.json()
    assert sim.booking("UNKNOWN-1") is None


@pytest.mark.parametrize(("mode", "status"), [("http_500", 500), ("http_504", 504)])
def test_getlisttask_honours_gateway_faults(sim: BpjsSimulator, mode: str, status: int) -> None:
    sim.seed_booking(BOOKING, tasks={99: 1_700_000_000_000})
    sim.set_fault("antreanrs:getlisttask", mode, times=1)
    failed = listtask(sim)
    assert failed.status_code == status and failed.text.lstrip().startswith("<html>")
    assert listed_tasks(listtask(sim)) == [99]


def test_getlisttask_honours_hang_and_drop_reply(sim: BpjsSimulator) -> None:
    sim.seed_booking(BOOKING, tasks={99: 1_700_000_000_000})
    sim.set_fault("antreanrs:getlisttask", "hang", times=1)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{sim.rs_url}/antrean/getlisttask",
            json={"kodebooking": BOOKING},
            headers=headers(),
            timeout=httpx.Timeout(10, read=0.5),
        )
    sim.set_fault("antreanrs:getlisttask", "drop_reply", times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        listtask(sim)
    assert listed_tasks(listtask(sim)) == [99]


@pytest.mark.parametrize("route", ["antreanrs:batal", "antreanrs:*"])
def test_not_recorded_answers_ok_but_keeps_neither_the_cancel_nor_task_99(
    sim: BpjsSimulator, route: str
) -> None:
    sim.seed_booking(BOOKING, tasks={1: 1_700_000_000_000})
    sim.set_fault(route, "not_recorded")
    assert meta(rs_batal(sim, CANCEL)) == (200, "Ok")
    if route == "antreanrs:*":
        assert meta(updatewaktu(sim, 99)) == (200, "Ok")
        assert meta(updatewaktu(sim, 99)) == (200, "Ok")  # not 208: the first was never kept
    assert listed_tasks(listtask(sim)) == [1]
    booking = sim.booking(BOOKING)
    assert not booking["cancelled"] and booking["tasks"] == {"1": 1_700_000_000_000}
    assert sim.applied_cancellations("antreanrs", BOOKING) == 0
    [logged] = sim.requests_log("antreanrs:batal")
    assert "not_recorded" in logged["note"] and "nothing recorded" in logged["note"]
    assert logged["reply_status"] == 200 and '"code":200' in logged["reply_body"]
    assert sim.stats()["not_recorded"]["antreanrs:batal"] == 1


def test_not_recorded_for_the_next_call_only_then_calls_are_recorded(sim: BpjsSimulator) -> None:
    sim.seed_booking(BOOKING)
    sim.set_fault("antreanrs:updatewaktu", "not_recorded", times=1)
    assert meta(updatewaktu(sim, 99)) == (200, "Ok")
    assert listed_tasks(listtask(sim)) == []
    assert meta(updatewaktu(sim, 99)) == (200, "Ok")
    assert listed_tasks(listtask(sim)) == [99]


def test_not_recorded_still_refuses_what_bpjs_would_refuse(sim: BpjsSimulator) -> None:
    sim.seed_booking(BOOKING, served=True)
    sim.set_fault("*", "not_recorded")
    assert meta(rs_batal(sim, CANCEL)) == (
        201,
        "Pasien Sudah Dilayani, Antrean Tidak Dapat Dibatalkan",
    )
    assert meta(rs_batal(sim, CANCEL, headers(secret="wrong"))) == (201, "Signature tidak sesuai")
    assert meta(post(f"{sim.fktp_url}/antrean/batal", FKTP_BODY)) == (
        201,
        "Antrean Tidak Ditemukan",
    )


def test_not_recorded_fktp_cancel_answers_ok_and_keeps_nothing(sim: BpjsSimulator) -> None:
    sim.configure(dev_autocreate=True)
    sim.set_fault("antreanfktp:batal", "not_recorded", probability=1.0)
    assert meta(post(f"{sim.fktp_url}/antrean/batal", FKTP_BODY)) == (200, "Ok")
    assert sim.state()["fktp"] == []
    assert sim.stats()["applied_cancellations_total"] == 0
