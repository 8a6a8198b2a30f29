"""The API's parameter types and what its OpenAPI document declares beyond FastAPI's defaults:
error answers as problem details, the request id header, bodies the handlers read themselves."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any

from annotated_types import Ge, Le, MaxLen
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, BeforeValidator, TypeAdapter

from services.cancel_api.domain import BPJS_FIELD_PATTERNS, BPJS_FIELDS
from services.cancel_api.errors import PROBLEM_JSON, Problem, ProblemDetails
from services.cancel_api.middleware import REQUEST_ID_PATTERN
from services.cancel_api.schemas import BPJS_MAX_FIELDS, NAME

MAX_ID = 999_999_999_999_999_999
IDEMPOTENCY_KEY_MAX = 200
_ID = re.compile(r"^[1-9][0-9]{0,17}$")


def _digits(raw: object) -> object:
    # Plain decimal digits only: int() would also take "+5", "05", " 5" or "1_0".
    if isinstance(raw, str) and not _ID.match(raw):
        raise ValueError(_bad_id(raw))
    return raw


QueueIdValue = Annotated[int, Ge(1), Le(MAX_ID), BeforeValidator(_digits)]


_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _iso_day(raw: object) -> object:
    # Only YYYY-MM-DD: pydantic would also read a Unix time ("1700000000") as a date.
    if isinstance(raw, str) and not _DAY.match(raw):
        raise ValueError(f"tanggal harus berbentuk YYYY-MM-DD: {raw[:40]!r}")
    return raw


# A calendar day (a clinic's service day); documented as `format: date`.
DayValue = Annotated[date, BeforeValidator(_iso_day)]


def parse_queue_id(raw: str) -> int:
    """`QueueIdValue` for a route that reads its path itself: the same rule, the same answer."""
    if not _ID.match(raw):
        raise Problem(422, "invalid_request", f"queue_id: Value error, {_bad_id(raw)}")
    return int(raw)


def _bad_id(raw: str) -> str:
    return f"id antrean tidak valid: {raw[:40]!r}"


IdempotencyKeyValue = Annotated[str, MaxLen(IDEMPOTENCY_KEY_MAX)]

_PROBLEM_REF = {"$ref": f"#/components/schemas/{ProblemDetails.__name__}"}
_DESCRIPTIONS = {
    401: "`unauthenticated`: no bearer token, or one that is invalid or expired.",
    403: "`forbidden`: the token lacks the permission.",
    404: "`queue_not_found` or `sync_not_found`: nothing with this id in the caller's clinic.",
    409: "The current state refuses the action (`queue_not_waiting`, `queue_already_cancelled`,"
    " `invalid_transition`).",
    413: "`payload_too_large`: the body is over the size limit.",
    415: "`unsupported_media_type`: a body that is not `application/json`.",
    422: "`invalid_request` (or `idempotency_key_reused`): a malformed parameter or body.",
    503: "`unavailable` (the database) or `auth_unavailable` (the identity provider's keys).",
}
# Statuses any authenticated operation may answer: no or a bad token, a missing permission, a
# body over the limit (refused before routing), a malformed parameter, the database or the
# identity provider away.
COMMON = (401, 403, 413, 422, 503)


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` of an authenticated route: each status answered as problem details."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*COMMON, *statuses}):
        response: dict[str, Any] = {
            "description": _DESCRIPTIONS[status],
            "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}},
        }
        if status == 503:
            response["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer", "minimum": 0},
                }
            }
        if status == 401:
            response["headers"] = {
                "WWW-Authenticate": {"schema": {"type": "string", "enum": ["Bearer"]}}
            }
        out[status] = response
    return out


def json_body(model: type[BaseModel], *, required: bool) -> dict[str, Any]:
    """`openapi_extra=` of a route that reads and validates `model` from its body itself."""
    return {
        "requestBody": {
            "required": required,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


def parameter(
    location: str, name: str, annotation: Any, description: str, *, required: bool = False
) -> dict[str, Any]:
    """An OpenAPI parameter whose schema is generated from the type the handler checks."""
    return {
        "name": name,
        "in": location,
        "required": required or location == "path",
        "description": description,
        "schema": TypeAdapter(annotation).json_schema(),
    }


REQUEST_ID_DESCRIPTION = (
    f"The caller's request id, echoed in the answer and logged. A value not matching "
    f"`{REQUEST_ID_PATTERN}` is replaced by a fresh id (never refused)."
)
_REQUEST_ID_PARAMETER = parameter("header", "X-Request-ID", str, REQUEST_ID_DESCRIPTION)
_REQUEST_ID_RESPONSE_HEADER = {
    "description": "The request id: the caller's when it was safe, else a fresh one.",
    "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
}
_TRACEPARENT_PARAMETER = parameter(
    "header",
    "traceparent",
    str,
    "The caller's W3C trace context; the request continues that trace. An invalid value is "
    "ignored (a new trace starts), never refused.",
)
_TRACERESPONSE_HEADER = {
    "description": "The W3C trace context of this request's span (Trace Context Level 2).",
    "schema": {"type": "string", "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"},
}


def install_openapi(
    app: FastAPI, models: tuple[type[BaseModel], ...], *, bpjs_service: str
) -> None:
    """The document FastAPI generates, plus the problem schema, the bodies read by hand
    (`models`) and the X-Request-ID and trace headers on every operation and answer."""
    cached: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not cached:
            cached.update(_document(app, models))
            schemas = cached["components"]["schemas"]
            schemas["RegisterRequest"] = register_schema(schemas["RegisterRequest"], bpjs_service)
        return cached

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def _document(app: FastAPI, models: tuple[type[BaseModel], ...]) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    documented: tuple[type[BaseModel], ...] = (ProblemDetails, *models)
    for model in documented:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    for item in doc.get("paths", {}).values():
        for operation in item.values():
            operation.setdefault("parameters", []).extend(
                (_REQUEST_ID_PARAMETER, _TRACEPARENT_PARAMETER)
            )
            for response in operation.get("responses", {}).values():
                headers = response.setdefault("headers", {})
                headers["X-Request-ID"] = _REQUEST_ID_RESPONSE_HEADER
                headers["traceresponse"] = _TRACERESPONSE_HEADER
    return doc


def register_schema(schema: dict[str, Any], bpjs_service: str) -> dict[str, Any]:
    """RegisterRequest as validated (domain.bpjs_problem): payer BPJS needs `bpjs` with the
    configured service's fields, any other payer sends no `bpjs`."""
    bpjs = next(s for s in schema["properties"]["bpjs"]["anyOf"] if s.get("type") == "object")
    value = next(iter(bpjs["patternProperties"].values()))
    key = {"maxLength": 64, "pattern": NAME}
    fields = BPJS_FIELDS[bpjs_service]
    with_bpjs = {
        "type": "object",
        "maxProperties": BPJS_MAX_FIELDS,
        "propertyNames": key,
        "additionalProperties": value,
        "required": list(fields),
        "properties": {
            f: {**value, "pattern": f"^{BPJS_FIELD_PATTERNS[f]}$"}
            if f in BPJS_FIELD_PATTERNS
            else value
            for f in fields
        },
    }

    def variant(payers: list[str], bpjs_schema: dict[str, Any], required: bool) -> dict[str, Any]:
        props = {**schema["properties"], "payer": {"type": "string", "enum": payers}}
        props["bpjs"] = bpjs_schema
        return {
            **schema,
            "properties": props,
            "required": [*schema["required"], *(["bpjs"] if required else [])],
        }

    others = [p for p in schema["properties"]["payer"]["enum"] if p != "BPJS"]
    return {
        "title": schema["title"],
        "oneOf": [
            variant(["BPJS"], with_bpjs, True),
            variant(others, {"type": "null"}, False),
        ],
    }
