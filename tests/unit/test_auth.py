"""Every JWT rule of CONTRACT.md §3: HS256 with a secret, RS256 from a JWKS URL over real HTTP."""

import base64
import json
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from shared.auth import AuthError, TokenVerifier, issue_dev_token
from shared.config import BaseServiceSettings

SECRET = "unit-test-secret-with-enough-length-32b"
CLAIMS = {"sub": "u1", "name": "Rina", "clinic_id": "K1", "permissions": ["cancel antrean"]}


def settings(**env) -> BaseServiceSettings:
    return BaseServiceSettings(**{"AUTH_JWT_SECRET": SECRET, **env})


def token(claims=None, key=SECRET, alg="HS256", headers=None, exp_in=600) -> str:
    body = {**CLAIMS, "exp": int(time.time()) + exp_in, **(claims or {})}
    return jwt.encode(body, key, algorithm=alg, headers=headers)


def test_valid_hs256_token_gives_the_principal():
    p = TokenVerifier(settings()).verify(token())
    assert (p.user_id, p.name, p.clinic_id) == ("u1", "Rina", "K1")
    assert p.can("cancel antrean") and not p.can("manage bpjs sync")


def test_dev_token_helper_issues_a_token_the_verifier_accepts():
    t = issue_dev_token(SECRET, user_id="u", name="N", clinic_id="K", permissions=["x"])
    assert TokenVerifier(settings()).verify(t).permissions == frozenset({"x"})


def _unsigned(claims: dict) -> str:
    def seg(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{seg({'alg': 'none', 'typ': 'JWT'})}.{seg(claims)}."


def test_alg_none_is_rejected():
    with pytest.raises(AuthError):
        TokenVerifier(settings()).verify(_unsigned({**CLAIMS, "exp": int(time.time()) + 60}))


def test_wrong_key_is_rejected():
    with pytest.raises(AuthError):
        TokenVerifier(settings()).verify(token(key="another-secret-another-secret-12"))


def test_expired_token_is_rejected():
    with pytest.raises(AuthError):
        TokenVerifier(settings()).verify(token(exp_in=-5))


@pytest.mark.parametrize("claim", ["sub", "name", "clinic_id", "permissions", "exp"])
def test_token_missing_a_required_claim_is_rejected(claim):
    body = {**CLAIMS, "exp": int(time.time()) + 600}
    body.pop(claim)
    with pytest.raises(AuthError):
        TokenVerifier(settings()).verify(jwt.encode(body, SECRET, algorithm="HS256"))


@pytest.mark.parametrize("value", ["cancel antrean", [1, 2], None])
def test_permissions_must_be_a_list_of_strings(value):
    with pytest.raises(AuthError):
        TokenVerifier(settings()).verify(token({"permissions": value}))


@pytest.mark.parametrize("raw", [None, "", "garbage", "a.b.c"])
def test_missing_or_malformed_token_is_rejected(raw):
    with pytest.raises(AuthError):
        TokenVerifier(settings()).verify(raw)


def test_audience_and_issuer_are_checked_when_configured():
    v = TokenVerifier(settings(AUTH_AUDIENCE="antrean", AUTH_ISSUER="https://idp"))
    assert v.verify(token({"aud": "antrean", "iss": "https://idp"})).user_id == "u1"
    with pytest.raises(AuthError):
        v.verify(token({"aud": "other", "iss": "https://idp"}))
    with pytest.raises(AuthError):
        v.verify(token({"aud": "antrean", "iss": "https://evil"}))
    with pytest.raises(AuthError):
        v.verify(token())


@pytest.fixture(scope="module")
def jwks_server():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    body = json.dumps({"keys": [jwk]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield key, f"http://127.0.0.1:{server.server_port}/jwks.json"
    server.shutdown()


def test_rs256_token_verified_with_the_jwks_url(jwks_server):
    key, url = jwks_server
    v = TokenVerifier(settings(AUTH_JWKS_URL=url))
    assert v.verify(token(key=key, alg="RS256", headers={"kid": "k1"})).clinic_id == "K1"


def test_hs256_is_off_when_a_jwks_url_is_set(jwks_server):
    _, url = jwks_server
    with pytest.raises(AuthError):
        TokenVerifier(settings(AUTH_JWKS_URL=url)).verify(token(headers={"kid": "k1"}))


def test_rs256_token_signed_by_another_key_is_rejected(jwks_server):
    _, url = jwks_server
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(AuthError):
        TokenVerifier(settings(AUTH_JWKS_URL=url)).verify(
            token(key=other, alg="RS256", headers={"kid": "k1"})
        )


def test_cached_token_is_verified_once_and_still_expires(monkeypatch):
    v = TokenVerifier(settings(), cache_s=30)
    exp = int(time.time()) + 1
    t = token({"exp": exp})
    calls = []
    decode = v._decode
    monkeypatch.setattr(v, "_decode", lambda tok: calls.append(tok) or decode(tok))
    assert v.verify(t) is v.verify(t)
    assert len(calls) == 1
    # The clocks (ours and PyJWT's) move to just past exp: the token is expired, cached or not.
    after = exp + 0.05

    class Later(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.fromtimestamp(after, tz)

    monkeypatch.setattr(time, "time", lambda: after)
    monkeypatch.setattr(jwt.api_jwt, "datetime", Later)
    with pytest.raises(AuthError, match="expired"):
        v.verify(t)


def test_token_cache_entries_live_at_most_cache_s(monkeypatch):
    v = TokenVerifier(settings(), cache_s=5)
    t = token()
    v.verify(t)
    later = time.monotonic() + 6
    monkeypatch.setattr(time, "monotonic", lambda: later)
    calls = []
    decode = v._decode
    monkeypatch.setattr(v, "_decode", lambda tok: calls.append(tok) or decode(tok))
    v.verify(t)
    assert len(calls) == 1


def test_failures_are_not_cached_and_the_cache_is_bounded():
    v = TokenVerifier(settings(), cache_s=30, cache_size=2)
    bad = token(key="another-secret-another-secret-12")
    for _ in range(2):
        with pytest.raises(AuthError):
            v.verify(bad)
    for i in range(5):
        v.verify(token({"sub": f"u{i}"}))
    assert len(v._cache) == 2
