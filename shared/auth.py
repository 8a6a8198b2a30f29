"""Staff token verification (CONTRACT.md §3): HS256 with a secret, or RS256 from a JWKS URL."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt

from shared.config import BaseServiceSettings

PERM_CANCEL = "cancel antrean"
PERM_CREATE = "create antrean"
PERM_UPDATE = "update antrean"
PERM_MANAGE_BPJS = "manage bpjs sync"

REQUIRED_CLAIMS = ("sub", "name", "clinic_id", "permissions", "exp")


class AuthError(Exception):
    """The token is missing, malformed, badly signed, expired or lacks a claim (HTTP 401)."""


@dataclass(frozen=True)
class Principal:
    user_id: str
    name: str
    clinic_id: str
    permissions: frozenset[str]

    def can(self, permission: str) -> bool:
        return permission in self.permissions


class TokenVerifier:
    """Verifies staff JWTs; when a JWKS URL is configured HS256 is switched off.

    With `cache_s` > 0 a verified token's principal is kept (keyed by the whole token string,
    at most `cache_size` tokens) for up to `cache_s` seconds and never past the token's `exp`,
    so a hit answers what a full verification would (signature, aud and iss do not change for
    a given string; `nbf`/`iat` had already passed). Failures are not cached. A key removed
    from the JWKS stops tokens it signed at most `cache_s` seconds later.
    """

    def __init__(
        self, settings: BaseServiceSettings, *, cache_s: float = 0.0, cache_size: int = 4096
    ) -> None:
        self._cache_s = cache_s
        self._cache_size = cache_size
        # token -> (principal, exp claim, monotonic deadline of the cache entry)
        self._cache: dict[str, tuple[Principal, int, float]] = {}
        self._secret = settings.jwt_secret
        self._audience = settings.auth_audience
        self._issuer = settings.auth_issuer
        self._jwks = (
            jwt.PyJWKClient(settings.auth_jwks_url, cache_keys=True, lifespan=300, timeout=5)
            if settings.auth_jwks_url
            else None
        )
        if self._jwks is None and self._secret is None:
            raise AuthError("no token key configured (AUTH_JWT_SECRET or AUTH_JWKS_URL)")

    def verify(self, token: str | None) -> Principal:
        if not token:
            raise AuthError("missing token")
        if self._cache_s > 0:
            hit = self._cache.get(token)
            if hit is not None:
                # PyJWT: expired when exp <= now (no leeway); the same test here.
                if time.time() < hit[1] and time.monotonic() < hit[2]:
                    return hit[0]
                del self._cache[token]
        try:
            claims = self._decode(token)
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        who = _principal(claims)
        if self._cache_s > 0:
            if len(self._cache) >= self._cache_size:
                del self._cache[next(iter(self._cache))]  # the oldest entry
            # PyJWT has checked that exp is an integer (int() of it is what it compares).
            self._cache[token] = (who, int(claims["exp"]), time.monotonic() + self._cache_s)
        return who

    def _decode(self, token: str) -> dict[str, Any]:
        # aud/iss are checked only when configured (CONTRACT.md §2); exp is always required.
        options: Any = {"require": ["exp", "sub"], "verify_aud": bool(self._audience)}
        common: dict[str, Any] = {"audience": self._audience, "issuer": self._issuer}
        if self._jwks is not None:
            key = self._jwks.get_signing_key_from_jwt(token).key
            return jwt.decode(token, key, algorithms=["RS256"], options=options, **common)
        assert self._secret is not None
        return jwt.decode(token, self._secret, algorithms=["HS256"], options=options, **common)


def _principal(claims: dict[str, Any]) -> Principal:
    for claim in REQUIRED_CLAIMS:
        if claim not in claims:
            raise AuthError(f"missing claim: {claim}")
    perms = claims["permissions"]
    if not isinstance(perms, list) or not all(isinstance(p, str) for p in perms):
        raise AuthError("claim permissions must be a list of strings")
    for claim in ("sub", "name", "clinic_id"):
        if not isinstance(claims[claim], str) or not claims[claim]:
            raise AuthError(f"claim {claim} must be a non-empty string")
    return Principal(
        user_id=claims["sub"],
        name=claims["name"],
        clinic_id=claims["clinic_id"],
        permissions=frozenset(perms),
    )


def issue_dev_token(
    secret: str,
    *,
    user_id: str,
    name: str,
    clinic_id: str,
    permissions: list[str],
    ttl_s: int = 12 * 3600,
) -> str:
    """An HS256 staff token for dev, demo and tests (production tokens come from the IdP)."""
    now = int(time.time())
    claims = {
        "sub": user_id,
        "name": name,
        "clinic_id": clinic_id,
        "permissions": permissions,
        "iat": now,
        "exp": now + ttl_s,
    }
    return jwt.encode(claims, secret, algorithm="HS256")
