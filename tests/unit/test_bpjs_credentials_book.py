"""Per-clinic BPJS credentials from a secrets file, with the BPJS_* set as the default."""

import json

import pytest
from pydantic import SecretStr

from services.bpjs_sync_worker.credentials import CredentialBook, CredentialsError, NoCredentials
from shared.bpjs import BpjsCredentials

DEFAULT = BpjsCredentials("10001", SecretStr("s"), SecretStr("u"))


def test_clinics_in_the_file_get_their_own_credentials_others_none(tmp_path):
    path = tmp_path / "creds.json"
    path.write_text(
        json.dumps({"KLINIK-B": {"cons_id": "20002", "secret_key": "sb", "user_key": "ub"}})
    )
    book = CredentialBook.load(DEFAULT, path)
    b = book.for_clinic("KLINIK-B")
    assert (b.cons_id, b.secret_key.get_secret_value(), b.user_key.get_secret_value()) == (
        "20002",
        "sb",
        "ub",
    )
    with pytest.raises(NoCredentials) as info:
        book.for_clinic("KLINIK-A")  # never the default set: that is another facility's
    assert "KLINIK-A" in str(info.value) and "20002" not in str(info.value)
    assert book.clinics == {"KLINIK-B"}


def test_no_file_means_the_default_for_everyone():
    assert CredentialBook.load(DEFAULT, None).for_clinic("any") is DEFAULT


@pytest.mark.parametrize(
    "content",
    ["not json", "[1, 2]", json.dumps({"K": {"cons_id": "1", "secret_key": "very-secret"}})],
    ids=["not-json", "not-a-map", "missing-user-key"],
)
def test_a_broken_file_is_refused_without_printing_its_secrets(tmp_path, content):
    path = tmp_path / "creds.json"
    path.write_text(content)
    with pytest.raises(CredentialsError) as info:
        CredentialBook.load(DEFAULT, path)
    assert "very-secret" not in str(info.value)


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(CredentialsError):
        CredentialBook.load(DEFAULT, tmp_path / "absent.json")
