"""Every staff-token rule (docs/SECURITY.md): HS256 with a secret, RS256 from a JWKS over HTTP."""

import base64
import json
import time
from collections.abc import Iterator
from datetime import datetime

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.auth import (
    AuthError,
    InvalidToken,
    NotStaffToken,
    TokenVerifier,
    issue_dev_token,
)
from shared.config import BaseServiceSettings
from tests.fixtures.infra import wait_until
from tests.fixtures.jwks import JwksServer, jwks_env

SECRET = "unit-test-secret-with-enough-length-32b"


@pytest.fixture
def idp() -> Iterator[JwksServer]:
    """The identity provider's JWKS endpoint, on a free local port."""
    server = JwksServer()
    yield server
    server.stop()


CLAIMS = {"sub": "u1", "name": "Rina", "clinic_id": "K1", "permissions": ["cancel antrean"]}


def settings(**env) -> BaseServiceSettings:
    return BaseServiceSettings(**{"APP_ENV": "test", "AUTH_JWT_SECRET": SECRET, **env})


def token(claims=None, key=SECRET, alg="HS256", headers=None, exp_in=600) -> str:
    body = {**CLAIMS, "exp": int(time.time()) + exp_in, **(claims or {})}
    return jwt.encode(body, key, algorithm=alg, headers=headers)


async def test_valid_hs256_token_gives_the_principal():
    p = await TokenVerifier(settings()).verify(token())
    assert (p.user_id, p.name, p.clinic_id) == ("u1", "Rina", "K1")
    assert p.can("cancel antrean") and not p.can("manage bpjs sync")


async def test_dev_token_helper_issues_a_token_the_verifier_accepts():
    t = issue_dev_token(SECRET, user_id="u", name="N", clinic_id="K", permissions=["x"])
    assert (await TokenVerifier(settings()).verify(t)).permissions == frozenset({"x"})


def _unsigned(claims: dict) -> str:
    def seg(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{seg({'alg': 'none', 'typ': 'JWT'})}.{seg(claims)}."


async def test_alg_none_is_rejected():
    with pytest.raises(InvalidToken):
        await TokenVerifier(settings()).verify(_unsigned({**CLAIMS, "exp": int(time.time()) + 60}))


async def test_wrong_key_is_rejected():
    with pytest.raises(InvalidToken):
        await TokenVerifier(settings()).verify(token(key="another-secret-another-secret-12"))


async def test_token_expired_beyond_the_leeway_is_rejected():
    with pytest.raises(InvalidToken, match="expired"):
        await TokenVerifier(settings(AUTH_LEEWAY_S="30")).verify(token(exp_in=-31))


async def test_token_expired_10_s_ago_is_accepted_with_leeway_30_and_refused_with_leeway_0():
    t = token(exp_in=-10)
    assert (await TokenVerifier(settings(AUTH_LEEWAY_S="30")).verify(t)).user_id == "u1"
    with pytest.raises(InvalidToken, match="expired"):
        await TokenVerifier(settings(AUTH_LEEWAY_S="0")).verify(t)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
async def test_leeway_tolerates_a_token_issued_by_a_clock_10_s_ahead(claim):
    t = token({claim: int(time.time()) + 10})
    assert (await TokenVerifier(settings(AUTH_LEEWAY_S="30")).verify(t)).user_id == "u1"
    with pytest.raises(InvalidToken):
        await TokenVerifier(settings(AUTH_LEEWAY_S="0")).verify(t)


@pytest.mark.parametrize("claim", ["sub", "exp"])
async def test_token_without_sub_or_exp_is_invalid(claim):
    body = {**CLAIMS, "exp": int(time.time()) + 600}
    body.pop(claim)
    with pytest.raises(InvalidToken):
        await TokenVerifier(settings()).verify(jwt.encode(body, SECRET, algorithm="HS256"))


@pytest.mark.parametrize("claim", ["name", "clinic_id", "permissions"])
async def test_authentic_token_missing_a_staff_claim_is_not_a_staff_token(claim):
    body = {**CLAIMS, "exp": int(time.time()) + 600}
    body.pop(claim)
    with pytest.raises(NotStaffToken):
        await TokenVerifier(settings()).verify(jwt.encode(body, SECRET, algorithm="HS256"))


@pytest.mark.parametrize("value", ["cancel antrean", [1, 2], None])
async def test_permissions_must_be_a_list_of_strings(value):
    with pytest.raises(NotStaffToken):
        await TokenVerifier(settings()).verify(token({"permissions": value}))


@pytest.mark.parametrize("raw", [None, "", "garbage", "a.b.c"])
async def test_missing_or_malformed_token_is_rejected(raw):
    with pytest.raises(InvalidToken):
        await TokenVerifier(settings()).verify(raw)


async def test_audience_and_issuer_are_checked_when_configured():
    v = TokenVerifier(settings(AUTH_AUDIENCE="antrean", AUTH_ISSUER="https://idp"))
    assert (await v.verify(token({"aud": "antrean", "iss": "https://idp"}))).user_id == "u1"
    with pytest.raises(AuthError):
        await v.verify(token({"aud": "other", "iss": "https://idp"}))
    with pytest.raises(AuthError):
        await v.verify(token({"aud": "antrean", "iss": "https://evil"}))
    with pytest.raises(AuthError):
        await v.verify(token())


async def test_rs256_token_verified_with_the_jwks_url(idp):
    kid = idp.add_key()
    async with TokenVerifier(settings(**jwks_env(idp.url))) as v:
        assert (await v.verify(idp.token(kid))).clinic_id == "KLINIK-A"


async def test_hs256_is_off_when_a_jwks_url_is_set(idp):
    kid = idp.add_key()
    async with TokenVerifier(settings(**jwks_env(idp.url))) as v:
        with pytest.raises(InvalidToken):
            await v.verify(token(headers={"kid": kid}))


async def test_rs256_token_signed_by_another_key_is_rejected(idp):
    kid = idp.add_key()
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    async with TokenVerifier(settings(**jwks_env(idp.url))) as v:
        with pytest.raises(InvalidToken):
            await v.verify(token(key=other, alg="RS256", headers={"kid": kid}))


async def test_cached_token_stops_once_its_key_leaves_the_jwks(idp):
    old, new = idp.add_key(), idp.add_key()
    env = jwks_env(idp.url, AUTH_JWKS_REFRESH_S="0.3", AUTH_JWKS_MIN_REFETCH_S="30")
    async with TokenVerifier(settings(**env), cache_s=3600) as v:
        t = idp.token(old)
        await v.verify(t)
        idp.remove_key(old)

        async def refused() -> bool:
            try:
                await v.verify(t)
            except InvalidToken:
                return True
            return False

        await wait_until(refused, 10, what="the cached token of a removed key refused")
        assert (await v.verify(idp.token(new))).user_id == "u-rina"


async def test_cached_token_is_verified_once_and_expires_after_the_leeway(monkeypatch):
    v = TokenVerifier(settings(AUTH_LEEWAY_S="2"), cache_s=30)
    exp = int(time.time()) + 1
    t = token({"exp": exp})
    calls = []
    decode = v._decode

    async def counting(tok):
        calls.append(tok)
        return await decode(tok)

    monkeypatch.setattr(v, "_decode", counting)
    assert await v.verify(t) is await v.verify(t)
    assert len(calls) == 1
    # The clocks (ours and PyJWT's) move: past exp but within the leeway the cached answer
    # stands; just past exp + leeway the token is expired, cached or not.
    moments = iter([exp + 1.5, exp + 2.05])
    now = next(moments)

    class Later(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.fromtimestamp(now, tz)

    monkeypatch.setattr(time, "time", lambda: now)
    monkeypatch.setattr(jwt.api_jwt, "datetime", Later)
    assert (await v.verify(t)).user_id == "u1"
    assert len(calls) == 1
    now = next(moments)
    with pytest.raises(InvalidToken, match="expired"):
        await v.verify(t)


async def test_token_cache_entries_live_at_most_cache_s(monkeypatch):
    v = TokenVerifier(settings(), cache_s=5)
    t = token()
    await v.verify(t)
    later = time.monotonic() + 6
    monkeypatch.setattr(time, "monotonic", lambda: later)
    calls = []
    decode = v._decode

    async def counting(tok):
        calls.append(tok)
        return await decode(tok)

    monkeypatch.setattr(v, "_decode", counting)
    await v.verify(t)
    assert len(calls) == 1


async def test_failures_are_not_cached_and_the_cache_is_bounded():
    v = TokenVerifier(settings(), cache_s=30, cache_size=2)
    bad = token(key="another-secret-another-secret-12")
    for _ in range(2):
        with pytest.raises(AuthError):
            await v.verify(bad)
    for i in range(5):
        await v.verify(token({"sub": f"u{i}"}))
    assert len(v._cache) == 2
