"""Staff token verification (docs/SECURITY.md): HS256 with a secret, or RS256 from a JWKS URL."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt

from shared.config import BaseServiceSettings

# AuthUnavailable is part of this module's interface: callers catch it next to AuthError.
from shared.jwks import AuthUnavailable as AuthUnavailable
from shared.jwks import JwksKeyStore, UnknownKey

PERM_CANCEL = "cancel antrean"
PERM_CREATE = "create antrean"
PERM_UPDATE = "update antrean"
PERM_MANAGE_BPJS = "manage bpjs sync"
# Holding any one of them makes a user staff of their clinic (allowed to read its tickets).
STAFF_PERMISSIONS = (PERM_CANCEL, PERM_CREATE, PERM_UPDATE, PERM_MANAGE_BPJS)

REQUIRED_CLAIMS = ("sub", "name", "clinic_id", "permissions", "exp")


class AuthError(Exception):
    """The token is not acceptable (HTTP 401). The message is for the log, never the client."""


class InvalidToken(AuthError):
    """Missing, malformed, badly signed, expired, or signed by a key the provider does not hold."""


class NotStaffToken(AuthError):
    """An authentic, unexpired token whose claims do not make a staff user (websocket 4403)."""


@dataclass(frozen=True)
class Principal:
    user_id: str
    name: str
    clinic_id: str
    permissions: frozenset[str]

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    def can_any(self, permissions: tuple[str, ...]) -> bool:
        return not self.permissions.isdisjoint(permissions)


class TokenVerifier:
    """Verifies staff JWTs; when a JWKS URL is configured HS256 is switched off.

    `exp`, `nbf` and `iat` are checked with `AUTH_LEEWAY_S` of clock-skew tolerance.
    With `cache_s` > 0 a verified token's principal is kept (keyed by the whole token string,
    at most `cache_size` tokens) for up to `cache_s` seconds and never past the token's
    `exp` (plus the leeway), so a hit answers what a full verification would (signature, aud
    and iss do not change for a given string; `nbf`/`iat` had already passed). The entry
    remembers the signing key's `kid`: once a JWKS refresh drops that key, the entry is no
    longer used. Failures are not cached.

    `verify` raises AuthError (InvalidToken or NotStaffToken) for a token to refuse, and
    AuthUnavailable when the provider's keys cannot be had right now.
    """

    def __init__(
        self, settings: BaseServiceSettings, *, cache_s: float = 0.0, cache_size: int = 4096
    ) -> None:
        self._cache_s = cache_s
        self._cache_size = cache_size
        # token -> (principal, exp claim, monotonic deadline of the entry, signing key id)
        self._cache: dict[str, tuple[Principal, int, float, str | None]] = {}
        self._secret = settings.jwt_secret
        self._audience = settings.auth_audience
        self._issuer = settings.auth_issuer
        self.leeway_s = settings.auth_leeway_s
        self._jwks = (
            JwksKeyStore(
                settings.auth_jwks_url,
                refresh_s=settings.auth_jwks_refresh_s,
                min_refetch_s=settings.auth_jwks_min_refetch_s,
            )
            if settings.auth_jwks_url
            else None
        )
        if self._jwks is None and self._secret is None:
            raise AuthError("no token key configured (AUTH_JWT_SECRET or AUTH_JWKS_URL)")

    def start(self) -> None:
        """Begin fetching the provider's keys now (else at the first token); needs a loop."""
        if self._jwks is not None:
            self._jwks.start()

    async def close(self) -> None:
        if self._jwks is not None:
            await self._jwks.close()

    async def __aenter__(self) -> TokenVerifier:
        self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def verify(self, token: str | None) -> Principal:
        if not token:
            raise InvalidToken("missing token")
        if self._cache_s > 0:
            hit = self._cache.get(token)
            if hit is not None:
                who, exp, deadline, kid = hit
                # PyJWT: expired when exp <= now - leeway; the same test here.
                if (
                    time.time() < exp + self.leeway_s
                    and time.monotonic() < deadline
                    and (kid is None or self._jwks is None or self._jwks.has(kid))
                ):
                    return who
                del self._cache[token]
        kid, claims = await self._decode(token)
        who = _principal(claims)
        if self._cache_s > 0:
            if len(self._cache) >= self._cache_size:
                del self._cache[next(iter(self._cache))]  # the oldest entry
            # PyJWT has checked that exp is an integer (int() of it is what it compares).
            deadline = time.monotonic() + self._cache_s
            self._cache[token] = (who, int(claims["exp"]), deadline, kid)
        return who

    async def _decode(self, token: str) -> tuple[str | None, dict[str, Any]]:
        # aud/iss are checked only when configured (AUTH_AUDIENCE, AUTH_ISSUER); exp always is.
        options: Any = {"require": ["exp", "sub"], "verify_aud": bool(self._audience)}
        common: dict[str, Any] = {
            "audience": self._audience,
            "issuer": self._issuer,
            "leeway": self.leeway_s,
            "options": options,
        }
        try:
            if self._jwks is None:
                assert self._secret is not None
                return None, jwt.decode(token, self._secret, algorithms=["HS256"], **common)
            kid = jwt.get_unverified_header(token).get("kid")
            if not isinstance(kid, str) or not kid:
                raise InvalidToken("token header has no kid")
            try:
                key = await self._jwks.key(kid)
            except UnknownKey as exc:
                raise InvalidToken(str(exc)) from exc
            return kid, jwt.decode(token, key, algorithms=["RS256"], **common)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token: {exc}") from exc


def _principal(claims: dict[str, Any]) -> Principal:
    for claim in REQUIRED_CLAIMS:
        if claim not in claims:
            raise NotStaffToken(f"missing claim: {claim}")
    perms = claims["permissions"]
    if not isinstance(perms, list) or not all(isinstance(p, str) for p in perms):
        raise NotStaffToken("claim permissions must be a list of strings")
    for claim in ("sub", "name", "clinic_id"):
        if not isinstance(claims[claim], str) or not claims[claim]:
            raise NotStaffToken(f"claim {claim} must be a non-empty string")
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
