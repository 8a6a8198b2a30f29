"""Classification of BPJS replies: every row of the table, decided on codes and transport facts."""

import json

import pytest

from services.bpjs_simulator.config import AUTH_FAILURE_MESSAGES, SimulatorSettings
from shared.bpjs import AUTH_ERROR_PATTERNS as EXPORTED_AUTH_PATTERNS
from shared.bpjs.outcome import (
    ALREADY_DONE_PATTERNS,
    AUTH_ERROR_PATTERNS,
    OutcomeKind,
    classify,
    compile_auth_patterns,
    is_success,
)

S, A, R, X, U = (
    OutcomeKind.SUCCESS,
    OutcomeKind.ALREADY_DONE,
    OutcomeKind.RETRYABLE,
    OutcomeKind.REJECTED,
    OutcomeKind.AUTH_ERROR,
)
HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


def meta(code: object, message: str = "", key: str = "metadata") -> str:
    return json.dumps({key: {"message": message, "code": code}})


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (200, meta(200, "Ok"), S, 200),
        (200, meta(200, "Ok", key="metaData"), S, 200),
        (200, meta("200", "Ok"), S, 200),
        (200, meta(" 200 ", "Ok", key="metaData"), S, 200),
        (200, meta(1, "OK", key="metaData"), S, 1),
        (200, meta("1", "OK", key="metaData"), S, 1),
        (200, meta(208, "TaskId=99 sudah ada"), A, 208),
        (200, meta("208", "Terdapat duplikasi Kode Booking", key="metaData"), A, 208),
        (200, meta(201, "Antrean Tidak Ditemukan atau Sudah Dibatalkan"), A, 201),
        (200, meta(201, "antrean sudah batal", key="metaData"), A, 201),
        (200, meta("201", "TaskId=99 sudah ada"), A, 201),
        (200, meta(201, "Antrean Tidak Ditemukan"), X, 201),
        (200, meta(201, "Pasien Sudah Dilayani, Antrean Tidak Dapat Dibatalkan"), X, 201),
        (200, meta(201, "Signature tidak sesuai"), U, 201),
        (200, meta(201, "TaskId=3 tidak dapat diupdate, TaskId terakhir 99"), X, 201),
        (200, meta(202, "Kode poli tidak sesuai", key="metaData"), X, 202),
        (200, meta(None, "Ok"), R, None),
        (200, meta("abc", "Ok"), R, None),
        (200, json.dumps({"response": "x"}), R, None),
        (200, json.dumps([1, 2]), R, None),
        (200, "Service sedang sibuk", R, None),
        (200, HTML_502, R, None),
        (200, "", R, None),
        (200, None, R, None),
        (404, "<html><title>404 Not Found</title></html>", R, None),
        (403, "<!DOCTYPE html><html>Forbidden</html>", U, None),
        (401, "<html><title>401 Authorization Required</title></html>", U, None),
        (401, "", U, None),
        (401, meta(401, "Unauthorized"), U, 401),
        (408, meta(201, "timeout"), R, None),
        (429, "Too Many Requests", R, None),
        (500, HTML_502, R, None),
        (502, HTML_502, R, None),
        (503, meta(201, "x"), R, None),
        (504, "<html>504 Gateway Time-out</html>", R, None),
    ],
)
def test_reply_is_classified_by_code_and_transport_facts(
    status: int, body: str | None, kind: OutcomeKind, code: int | None
) -> None:
    outcome = classify(None, status, body)
    assert (outcome.kind, outcome.code) == (kind, code)
    assert outcome.detail


def test_body_as_bytes_is_read_like_text() -> None:
    body = meta(201, "Antrean Tidak Ditemukan").encode()
    outcome = classify(None, 200, body)
    assert outcome.kind is X
    assert outcome.message == "Antrean Tidak Ditemukan"


def test_html_content_type_is_retryable_even_if_the_body_parses() -> None:
    outcome = classify(None, 200, meta(200, "Ok"), content_type="text/html; charset=UTF-8")
    assert outcome.kind is R


@pytest.mark.parametrize(
    "error", ["ReadTimeout", "ConnectError: [Errno 111] Connection refused", "connection reset"]
)
def test_transport_errors_are_retryable(error: str) -> None:
    outcome = classify(error, None, None)
    assert outcome.kind is R
    assert outcome.code is None
    assert error in outcome.detail


def test_transport_error_wins_over_a_partial_status() -> None:
    assert classify("RemoteProtocolError", 200, meta(200, "Ok")).kind is R


def test_no_status_and_no_error_is_retryable() -> None:
    assert classify(None, None, None).kind is R


def test_rejected_outcome_carries_code_and_message() -> None:
    outcome = classify(None, 200, meta(201, "Antrean Tidak Ditemukan"))
    assert outcome.message == "Antrean Tidak Ditemukan"
    assert "201" in outcome.detail


@pytest.mark.parametrize(
    "message",
    [
        "Antrean Tidak Ditemukan atau Sudah Dibatalkan",
        "ANTREAN SUDAH DIBATALKAN",
        "Antrean sudah batal",
        "TaskId=99 sudah ada",
        "taskid = 5 Sudah Ada",
    ],
)
def test_already_done_patterns_match_case_insensitively(message: str) -> None:
    assert classify(None, 200, meta(201, message)).kind is A


def test_patterns_live_in_one_tuple() -> None:
    assert isinstance(ALREADY_DONE_PATTERNS, tuple)
    assert len(ALREADY_DONE_PATTERNS) >= 3


def test_long_bodies_give_short_details() -> None:
    outcome = classify(None, 502, "<html>" + "x" * 5000 + "</html>")
    assert len(outcome.detail) <= 200


@pytest.mark.parametrize(
    ("kind", "expected"), [(S, True), (A, True), (R, False), (X, False), (U, False)]
)
def test_is_success(kind: OutcomeKind, expected: bool) -> None:
    assert is_success(kind) is expected


AUTH_WORDINGS = [
    "Signature tidak sesuai",
    "signature tidak valid",
    "Invalid signature",
    "Invalid Signature!",
    "signature not valid",
    "X-Signature salah",
    "Tanda tangan tidak sesuai",
    "X-cons-id tidak ditemukan",
    "X-cons-id tidak terdaftar",
    "x_cons_id tidak valid",
    "Consumer ID tidak terdaftar",
    "ConsumerID invalid",
    "cons id tidak valid",
    "cons-id tidak dikenal",
    "consumer not found",
    "Unknown consumer",
    "Timestamp tidak valid",
    "X-timestamp tidak sesuai",
    "time stamp kadaluarsa",
    "timestamp kedaluwarsa",
    "TIMESTAMP KADALUWARSA",
    "Request expired",
    "request sudah kadaluarsa",
    "Request has expired",
    "Request expired, waktu tidak sesuai",
    "waktu request tidak sesuai",
    "Waktu  request  tidak sesuai",
    "user_key tidak valid",
    "User Key salah",
    "user-key tidak sesuai",
    "userkey tidak terdaftar",
    "Invalid user key",
    "Authentication failed",
    "authentication_failed",
    "Autentikasi gagal",
    "Otentikasi gagal",
    "Unauthorized",
    "UNAUTHORISED",
    "un-authorized access",
    "Not authorized",
    "Akses ditolak",
    "Access denied",
    "Forbidden",
    "Token tidak valid",
    "Invalid token",
    "token expired",
    "kredensial tidak valid",
    "Invalid credentials",
]

BUSINESS_REFUSALS = [
    "Antrean Tidak Ditemukan",
    "Pasien Sudah Dilayani, Antrean Tidak Dapat Dibatalkan",
    "Data tidak valid",
    "TaskId=5 tidak dapat diupdate, TaskId terakhir 99",
    "nomorkartu tidak valid, harus 13 digit",
    "tanggalperiksa tidak valid",
    "tanggalperiksa tidak valid, format YYYY-MM-DD",
    "waktu tidak valid",
    "Kode poli tidak sesuai",
    "Rujukan sudah kadaluarsa",
    "Request Time Out",
    "keterangan tidak boleh kosong",
    "Peserta tidak ditemukan",
    "Gagal memproses permintaan",
]


@pytest.mark.parametrize("message", AUTH_WORDINGS)
@pytest.mark.parametrize("key", ["metadata", "metaData"])
def test_authentication_refusals_are_auth_errors_whatever_the_wording(
    message: str, key: str
) -> None:
    outcome = classify(None, 200, meta(201, message, key=key))
    assert (outcome.kind, outcome.code, outcome.message) == (U, 201, message)
    assert not is_success(outcome.kind)


@pytest.mark.parametrize("message", BUSINESS_REFUSALS)
def test_business_refusals_stay_rejected(message: str) -> None:
    assert classify(None, 200, meta(201, message)).kind is X


@pytest.mark.parametrize(
    "message",
    ["Antrean Tidak Ditemukan atau Sudah Dibatalkan", "TaskId=99 sudah ada", "Antrean sudah batal"],
)
def test_already_done_wordings_are_not_auth_errors(message: str) -> None:
    assert classify(None, 200, meta(201, message)).kind is A


def test_a_clear_auth_message_wins_over_code_208() -> None:
    assert classify(None, 200, meta(208, "Signature tidak sesuai")).kind is U


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize(
    "body",
    [
        "<html><head><title>401 Authorization Required</title></head><body>nginx</body></html>",
        "<!DOCTYPE html><html><body><h1>403 Forbidden</h1></body></html>",
        '{"message": "Unauthorized"}',
        "",
        None,
    ],
)
def test_http_401_and_403_are_auth_errors_with_any_body(status: int, body: str | None) -> None:
    outcome = classify(None, status, body, content_type="text/html")
    assert (outcome.kind, outcome.code) == (U, None)
    assert f"HTTP {status}" in outcome.detail


def test_http_401_with_metadata_keeps_its_code_and_message() -> None:
    outcome = classify(None, 401, meta(201, "X-cons-id tidak terdaftar"))
    assert (outcome.kind, outcome.code, outcome.message) == (U, 201, "X-cons-id tidak terdaftar")


def test_extra_patterns_mark_more_wordings_as_auth_errors() -> None:
    body = meta(201, "Kunci API ditolak oleh gateway")
    assert classify(None, 200, body).kind is X
    extra = [r"kunci\s+api\s+ditolak"]
    assert classify(None, 200, body, auth_error_patterns=extra).kind is U
    assert classify(None, 200, meta(201, "KUNCI  API DITOLAK"), auth_error_patterns=extra).kind is U
    # Extra patterns add to the built-in vocabulary, never replace it.
    signature = meta(201, "Signature tidak sesuai")
    assert classify(None, 200, signature, auth_error_patterns=extra).kind is U
    assert (
        classify(None, 200, meta(201, "Antrean Tidak Ditemukan"), auth_error_patterns=extra).kind
        is X
    )


def test_extra_patterns_never_turn_a_success_into_an_auth_error() -> None:
    extra = [r"(?i)ok", r"^.*$"]
    assert classify(None, 200, meta(200, "Ok"), auth_error_patterns=extra).kind is S
    assert classify(None, 200, meta(201, "anything"), auth_error_patterns=extra).kind is U


def test_an_invalid_extra_pattern_is_refused_with_its_text() -> None:
    with pytest.raises(ValueError, match=r"kunci\("):
        compile_auth_patterns([r"kunci("])


def test_the_auth_vocabulary_is_one_exported_tuple() -> None:
    assert isinstance(AUTH_ERROR_PATTERNS, tuple)
    assert EXPORTED_AUTH_PATTERNS is AUTH_ERROR_PATTERNS
    assert OutcomeKind.AUTH_ERROR.value == "auth_error"


def test_the_simulators_authentication_messages_are_auth_errors() -> None:
    # The defaults the simulator answers for each kind of authentication failure.
    fields = SimulatorSettings.model_fields
    messages = [fields[name].default for name in AUTH_FAILURE_MESSAGES.values()]
    assert "Signature tidak sesuai" in messages and len(set(messages)) == 4
    for message in messages:
        assert classify(None, 200, meta(201, message)).kind is U, message
        assert classify(None, 200, meta(201, message, key="metaData")).kind is U, message
