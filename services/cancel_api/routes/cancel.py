"""Cancelling a ticket: the API's busiest route."""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.cancel_api import service
from services.cancel_api.access import BEARER_REQUIREMENT, authenticate, authorize
from services.cancel_api.context import ApiContext, read_json_body
from services.cancel_api.errors import Problem
from services.cancel_api.openapi import (
    IDEMPOTENCY_KEY_MAX,
    IdempotencyKeyValue,
    QueueIdValue,
    json_body,
    parameter,
    parse_queue_id,
    problems,
)
from services.cancel_api.schemas import CancelRequest, CancelResponse
from shared import tracing
from shared.auth import PERM_CANCEL

router = APIRouter(tags=["cancel"])

# The route reads its path parameter and headers itself: FastAPI's per-request parameter and
# dependency solving cost more CPU than the rest of the handler (bench/README.md, the
# api_throughput benchmark). The checks, their order and their answers are those of declared
# parameters (the `PERM_CANCEL` permission, then the Idempotency-Key length, then the id), and
# the OpenAPI document declares them from the same types the other routes use.
CANCEL_OPENAPI: dict[str, Any] = {
    "parameters": [
        parameter("path", "queue_id", QueueIdValue, "The ticket's id."),
        parameter(
            "header",
            "Idempotency-Key",
            IdempotencyKeyValue,
            "Makes a retried cancel safe: the same key with the same request replays the first "
            "answer; with another request it is refused (`idempotency_key_reused`).",
        ),
    ],
    "security": BEARER_REQUIREMENT,
    **json_body(CancelRequest, required=False),
}


@router.post(
    "/antrian_ruangan/batal/{queue_id}",
    response_model=CancelResponse,
    responses=problems(404, 409, 415),
    openapi_extra=CANCEL_OPENAPI,
)
async def cancel(request: Request) -> Any:
    ctx: ApiContext = request.app.state.ctx
    headers = request.headers
    who = authorize(await authenticate(ctx, headers.get("authorization")), PERM_CANCEL)
    idempotency_key = headers.get("idempotency-key")
    if idempotency_key is not None and len(idempotency_key) > IDEMPOTENCY_KEY_MAX:
        raise Problem(
            422,
            "invalid_request",
            f"idempotency-key: String should have at most {IDEMPOTENCY_KEY_MAX} characters",
        )
    qid = parse_queue_id(request.path_params["queue_id"])
    structlog.contextvars.bind_contextvars(queue_id=qid)  # every later line of this request
    tracing.annotate(queue_id=qid)
    body = await read_json_body(request, CancelRequest, optional=True)
    result = await service.cancel_ticket(
        ctx.pool,
        who,
        qid,
        body,
        topic=ctx.topic,
        bell=ctx.bell,
        idempotency_key=idempotency_key,
        request_id=request.state.request_id,
    )
    if idempotency_key is None:
        # A fresh result is already in the shape and order of CancelResponse: rendered
        # directly, to the bytes FastAPI's response_model path would produce. A keyed request
        # may replay a stored (jsonb, reordered) body: that one goes through response_model.
        return Response(orjson.dumps(result), media_type="application/json")
    return result
