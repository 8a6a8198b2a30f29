"""Settings refuse to start with bad secrets in production; logs never print a secret."""

import io
import json
import logging
import re

import httpx
import pytest

from services.cancel_api.app import create_app
from services.cancel_api.config import CancelApiSettings
from shared.config import (
    DEV_DB_ROLE_PASSWORDS,
    BaseServiceSettings,
    SettingsRefused,
    database_url_problem,
    is_placeholder,
)
from shared.logging import configure_logging, get_logger
from tests.fixtures.infra import REPO

PROD = {"APP_ENV": "production", "DATABASE_URL": "postgresql://u:Pr0d-pw@h/d"}


def test_production_without_secrets_refuses_to_start(monkeypatch):
    monkeypatch.delenv("AUTH_JWT_SECRET", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(SettingsRefused, match="AUTH_JWT_SECRET is missing"):
        BaseServiceSettings(APP_ENV="production")


def test_settings_default_to_production(monkeypatch):
    monkeypatch.delenv("APP_ENV")
    with pytest.raises(SettingsRefused, match="DATABASE_URL is missing"):
        BaseServiceSettings()


def test_production_with_secrets_starts():
    s = BaseServiceSettings(**PROD, AUTH_JWT_SECRET="s" * 32)
    assert s.jwt_secret == "s" * 32


def test_jwks_in_production_needs_issuer_audience_and_https():
    with pytest.raises(SettingsRefused, match="without AUTH_ISSUER and AUTH_AUDIENCE"):
        BaseServiceSettings(**PROD, AUTH_JWKS_URL="https://idp/certs")
    with pytest.raises(SettingsRefused, match="AUTH_JWKS_URL is not https"):
        BaseServiceSettings(
            **PROD, AUTH_JWKS_URL="http://idp/certs", AUTH_ISSUER="i", AUTH_AUDIENCE="a"
        )
    ok = BaseServiceSettings(
        **PROD, AUTH_JWKS_URL="https://idp/certs", AUTH_ISSUER="i", AUTH_AUDIENCE="a"
    )
    assert ok.jwt_secret is None


def test_database_url_needs_a_real_password_or_a_client_certificate():
    assert database_url_problem("postgresql://u@h/d") == "DATABASE_URL has no password"
    assert database_url_problem("postgresql://u@h/d?password=Pr0d-pw") is None
    assert database_url_problem("postgresql://u@h/d?sslcert=/c.pem&sslkey=/k.pem") is None
    for password in ("antrean", *DEV_DB_ROLE_PASSWORDS.values()):
        assert database_url_problem(f"postgresql://u:{password}@h/d") == (
            "DATABASE_URL has a dev password"
        )


# Names .env.example gives secrets; their shipped values must all be known placeholders.
_SECRET_NAME = re.compile(r"SECRET|PASSWORD|_KEY$|_TOKEN$")
_ENTRY = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(\S*)")


def test_every_secret_value_shipped_in_env_example_is_a_refused_placeholder():
    checked = 0
    for line in (REPO / ".env.example").read_text().splitlines():
        match = _ENTRY.match(line)
        if not match or not match.group(2):
            continue
        name, value = match.groups()
        if name == "DATABASE_URL" or value.startswith("postgresql://"):
            assert database_url_problem(value) is not None, line
            checked += 1
        elif _SECRET_NAME.search(name) and not value.startswith("/"):
            assert is_placeholder(value), f"{name}: add its value to shared.config.PLACEHOLDERS"
            checked += 1
    assert checked >= 4


def test_make_up_gives_the_service_roles_the_passwords_production_refuses():
    pg_script = (REPO / "infra/postgres/pg.sh").read_text()
    for role, password in DEV_DB_ROLE_PASSWORDS.items():
        assert f"[{role}]={password}" in pg_script


async def _statuses(settings: CancelApiSettings) -> dict[str, int]:
    transport = httpx.ASGITransport(app=create_app(settings))  # no lifespan: no database needed
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        return {
            p: (await client.get(p)).status_code for p in ("/metrics", "/docs", "/openapi.json")
        }


async def test_api_docs_and_metrics_are_off_the_public_port_in_production():
    secrets = {**PROD, "AUTH_JWT_SECRET": "s" * 32}
    production = await _statuses(CancelApiSettings(**secrets))
    assert production == {"/metrics": 404, "/docs": 404, "/openapi.json": 404}
    enabled = await _statuses(CancelApiSettings(**secrets, API_DOCS_ENABLED="true"))
    assert enabled == {"/metrics": 404, "/docs": 200, "/openapi.json": 200}
    dev = await _statuses(CancelApiSettings(APP_ENV="test"))
    assert dev == {"/metrics": 200, "/docs": 200, "/openapi.json": 200}


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


def test_json_log_lines_keep_every_value_orjson_refuses_and_redact_any_case():
    stream = io.StringIO()
    configure_logging("test", json=True)
    logging.getLogger().handlers[0].stream = stream  # type: ignore[attr-defined]

    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    get_logger("t").info("odd", big=2**70, obj=Opaque(), keys={1: "a"}, note="BEARER abc.def")
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["big"] == 2**70 and line["obj"] == "<opaque>" and line["keys"] == {"1": "a"}
    assert line["note"] == "BEARER ***"
    get_logger("t").info("plain", note="no secret here: ftp-less text", count=3)
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["note"] == "no secret here: ftp-less text" and line["count"] == 3


def test_empty_optional_auth_settings_mean_unset():
    s = BaseServiceSettings(AUTH_ISSUER="", AUTH_AUDIENCE="", AUTH_JWKS_URL="")
    assert (s.auth_issuer, s.auth_audience, s.auth_jwks_url) == (None, None, None)
    assert s.jwt_secret  # HS256 stays on in dev when the JWKS URL is empty
