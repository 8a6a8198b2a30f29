"""Authentication and permissions as FastAPI dependencies (`Staff`, `Canceller`, ...)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import structlog
from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.cancel_api.context import ApiContext, Ctx
from services.cancel_api.errors import Problem
from shared.auth import (
    PERM_CREATE,
    PERM_MANAGE_BPJS,
    PERM_UPDATE,
    STAFF_PERMISSIONS,
    AuthError,
    AuthUnavailable,
    Principal,
)
from shared.logging import get_logger

log = get_logger(__name__)

UNAUTHENTICATED_DETAIL = "Token tidak valid atau sudah kedaluwarsa."
# Documents the bearer scheme; a missing or non-bearer header is answered by `authenticate`.
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="staffToken",
    bearerFormat="JWT",
    description="A staff token of the identity provider (clinic, user and permissions).",
)
# The security requirement of a route that reads its Authorization header itself.
BEARER_REQUIREMENT: list[dict[str, list[Any]]] = [{bearer.scheme_name: []}]


async def authenticate(ctx: ApiContext, authorization: str | None) -> Principal:
    """The principal of an `Authorization: Bearer <token>` header, or 401/503 problems."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        token = ""
    return await _verified(ctx, token.strip())


async def _verified(ctx: ApiContext, token: str) -> Principal:
    if not token:
        raise Problem(401, "unauthenticated", "Token Bearer tidak ada.")
    try:
        who = await ctx.verifier.verify(token)
    except AuthError as exc:
        # The verifier's reason stays in the log: it would tell a forger what to fix.
        log.info("token_rejected", reason=str(exc)[:200])
        raise Problem(401, "unauthenticated", UNAUTHENTICATED_DETAIL) from exc
    except AuthUnavailable as exc:
        raise Problem(
            503,
            "auth_unavailable",
            "Kunci penyedia identitas (login) tidak dapat diambil saat ini.",
            headers={"Retry-After": str(exc.retry_after_s)},
        ) from exc
    structlog.contextvars.bind_contextvars(user_id=who.user_id, clinic_id=who.clinic_id)
    return who


def authorize(who: Principal, permission: str) -> Principal:
    if not who.can(permission):
        raise Problem(403, "forbidden", f"Izin '{permission}' diperlukan.")
    return who


# async: a plain `def` dependency would run in the thread pool on every request.
async def principal(
    ctx: Ctx, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    return await _verified(ctx, credentials.credentials.strip() if credentials else "")


# Reading the clinic's tickets (names, record and BPJS numbers) needs one staff permission.
async def staff(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if not who.can_any(STAFF_PERMISSIONS):
        raise Problem(403, "forbidden", "Salah satu izin petugas antrean diperlukan.")
    return who


def require(permission: str) -> Callable[[Principal], Awaitable[Principal]]:
    async def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        return authorize(who, permission)

    return check


Staff = Annotated[Principal, Depends(staff)]
Creator = Annotated[Principal, Depends(require(PERM_CREATE))]
Updater = Annotated[Principal, Depends(require(PERM_UPDATE))]
SyncAdmin = Annotated[Principal, Depends(require(PERM_MANAGE_BPJS))]
