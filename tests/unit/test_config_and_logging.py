"""Settings refuse to start without secrets outside dev mode; logs never print a secret."""

import io
import json
import logging

import pytest

from shared.config import BaseServiceSettings, MissingSecretError
from shared.logging import configure_logging, get_logger


def test_production_without_secrets_refuses_to_start(monkeypatch):
    monkeypatch.delenv("AUTH_JWT_SECRET", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(MissingSecretError, match="AUTH_JWT_SECRET"):
        BaseServiceSettings(APP_ENV="production")


def test_production_with_secrets_starts():
    s = BaseServiceSettings(
        APP_ENV="production", AUTH_JWT_SECRET="s" * 32, DATABASE_URL="postgresql://u:p@h/d"
    )
    assert s.jwt_secret == "s" * 32


def test_dev_mode_has_a_dev_secret_and_jwks_turns_hs256_off():
    assert BaseServiceSettings(APP_ENV="dev").jwt_secret
    assert BaseServiceSettings(APP_ENV="dev", AUTH_JWKS_URL="http://idp/jwks").jwt_secret is None


def test_secrets_do_not_appear_in_the_settings_repr():
    s = BaseServiceSettings(
        AUTH_JWT_SECRET="very-secret-value", DATABASE_URL="postgresql://u:pw@h/d"
    )
    assert "very-secret-value" not in repr(s) and ":pw@" not in repr(s)


def test_json_logs_redact_secret_fields_and_passwords_in_text():
    stream = io.StringIO()
    configure_logging("test", json=True)
    logging.getLogger().handlers[0].stream = stream  # type: ignore[attr-defined]
    get_logger("t").info(
        "connecting",
        database_url="postgresql://u:hunter2@h/d",
        user_key="abc123",
        note="dsn postgresql://x:s3cret@h/db with Bearer eyJhbGciOi.payload.sig",
    )
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    text = json.dumps(line)
    assert line["event"] == "connecting" and line["service"] == "test"
    for secret in ("hunter2", "abc123", "s3cret", "eyJhbGciOi"):
        assert secret not in text


def test_empty_optional_auth_settings_mean_unset():
    s = BaseServiceSettings(AUTH_ISSUER="", AUTH_AUDIENCE="", AUTH_JWKS_URL="")
    assert (s.auth_issuer, s.auth_audience, s.auth_jwks_url) == (None, None, None)
    assert s.jwt_secret  # HS256 stays on in dev when the JWKS URL is empty
