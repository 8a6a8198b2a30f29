"""What the routers share: one `ApiContext` per app (settings, token verifier, database pool),
reached through `request.app.state`; and request bodies the handlers read themselves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from pydantic import ValidationError

from services.cancel_api.admission import BoundedPool
from services.cancel_api.config import CancelApiSettings
from services.cancel_api.errors import Problem
from shared.auth import TokenVerifier
from shared.clinics import ZoneCache
from shared.outbox import OutboxBell, OutboxRelay


@dataclass
class ApiContext:
    settings: CancelApiSettings
    verifier: TokenVerifier
    topic: str
    # Created in the lifespan (no import-time globals).
    pool: BoundedPool = field(init=False)
    # Wakes the relay (here, or elsewhere by NOTIFY) once a cancel has committed.
    bell: OutboxBell = field(init=False)
    relay: OutboxRelay | None = None
    # Clinic time zones (clinic_setting), remembered a few minutes.
    zones: ZoneCache = field(default_factory=ZoneCache)


def context_of(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(context_of)]


async def read_json_body(request: Request, model: type[Any], *, optional: bool) -> Any:
    """The body as `model`; read by hand so a wrong Content-Type is 415, not a validation error."""
    raw = await request.body()
    if not raw.strip():
        if optional:
            return model()
        raise Problem(422, "invalid_request", "Body JSON wajib diisi.")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise Problem(
            415,
            "unsupported_media_type",
            f"Content-Type harus application/json, bukan {ctype or 'kosong'!r}.",
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Problem(422, "invalid_request", f"Body bukan JSON yang valid: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise Problem(422, "invalid_request", detail) from exc
