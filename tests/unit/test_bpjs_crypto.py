"""BPJS signing and `response` decryption against fixed test vectors (docs/BPJS.md), exactly."""

import pytest

from shared.bpjs.crypto import (
    ResponseDecryptError,
    decrypt_response,
    encrypt_response,
    lz_compress_uri,
    lz_decompress_uri,
    response_key,
    signature,
)

CONS_ID, SECRET, TIMESTAMP = "1234", "pwd", "433223232"
SIGNATURE = "eXMtvX2r7e7CLCIu3kpEpCrvciZgK8FuOhKv06NDAHk="
KEY_HEX = "f75bf2014da65c8f1c39a47de848ba383d051f4e218fa70774fcd3fb216c5f9b"
PLAINTEXT = '{"list":[{"taskid":1,"kodebooking":"16032021A001"}]}'
LZ_FORM = "N4IgNglgzgLiBcBtUMCGUDWEAmCCMANCBgPbYCmARiSVgHYDmCIeAbAAwDMATO93gEF27PCAC+AXTFA"
RESPONSE = (
    "BrIc3POWIpoZX21f0INPcWm62bEooKgd5jfX9J33wkDzVmr8thzvqkxBPldDof3oZ5m0XiSS7NecZTTvGUFBnJgm"
    "Pcpt0Kg4ynGqwygBPqA="
)
TASKS = [{"taskid": 1, "kodebooking": "16032021A001"}]


def test_signature_matches_the_documented_vector() -> None:
    assert signature(CONS_ID, SECRET, TIMESTAMP) == SIGNATURE


def test_signature_is_the_same_for_an_int_timestamp() -> None:
    assert signature(CONS_ID, SECRET, int(TIMESTAMP)) == SIGNATURE


def test_signature_changes_with_the_timestamp() -> None:
    assert signature(CONS_ID, SECRET, "433223233") != SIGNATURE


def test_response_key_matches_the_documented_vector() -> None:
    assert response_key(CONS_ID, SECRET, TIMESTAMP).hex() == KEY_HEX


def test_lz_string_forms_match_the_documented_vector() -> None:
    assert lz_compress_uri(PLAINTEXT) == LZ_FORM
    assert lz_decompress_uri(LZ_FORM) == PLAINTEXT


def test_documented_response_decrypts_to_the_task_list() -> None:
    assert decrypt_response(CONS_ID, SECRET, TIMESTAMP, RESPONSE) == TASKS


def test_encrypting_the_documented_plaintext_gives_the_documented_response() -> None:
    assert encrypt_response(CONS_ID, SECRET, TIMESTAMP, {"list": TASKS}) == RESPONSE


@pytest.mark.parametrize(
    "payload",
    [
        [{"taskid": 99, "kodebooking": "2024/01/31/000123", "taskname": "tidak hadir/batal"}],
        {"list": [{"nama": "Siti Aminah", "catatan": "é 漢字 😀"}]},
        {"nomorantrean": "A-007", "sisakuota": 3},
        [],
    ],
)
def test_encrypt_then_decrypt_round_trips(payload: object) -> None:
    encrypted = encrypt_response("10001", "sim-dev-secret", "1700000000", payload)
    expected = payload["list"] if isinstance(payload, dict) and "list" in payload else payload
    assert decrypt_response("10001", "sim-dev-secret", "1700000000", encrypted) == expected


def test_characters_beyond_the_bmp_survive_lz_string() -> None:
    text = "antrean 😀 𠜎 selesai"
    assert lz_decompress_uri(lz_compress_uri(text)) == text


def test_decrypting_with_another_timestamp_fails_cleanly() -> None:
    with pytest.raises(ResponseDecryptError):
        decrypt_response(CONS_ID, SECRET, "433223233", RESPONSE)


@pytest.mark.parametrize("garbage", ["", "not base64!", "QUJD", "A" * 44])
def test_garbage_response_fails_cleanly(garbage: str) -> None:
    with pytest.raises(ResponseDecryptError):
        decrypt_response(CONS_ID, SECRET, TIMESTAMP, garbage)
