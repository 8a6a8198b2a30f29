"""Classification of BPJS replies: every row of the table, decided on codes and transport facts."""

import json

import pytest

from shared.bpjs.outcome import ALREADY_DONE_PATTERNS, OutcomeKind, classify, is_success

S, A, R, X = (
    OutcomeKind.SUCCESS,
    OutcomeKind.ALREADY_DONE,
    OutcomeKind.RETRYABLE,
    OutcomeKind.REJECTED,
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
        (200, meta(201, "Signature tidak sesuai"), X, 201),
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
        (403, "<!DOCTYPE html><html>Forbidden</html>", R, None),
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


@pytest.mark.parametrize(("kind", "expected"), [(S, True), (A, True), (R, False), (X, False)])
def test_is_success(kind: OutcomeKind, expected: bool) -> None:
    assert is_success(kind) is expected
