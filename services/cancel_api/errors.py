"""RFC 9457 problem details with a stable `code` and the Indonesian `title` the UI shows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from services.cancel_api.domain import Refusal
from shared.db import UNAVAILABLE_ERRORS
from shared.logging import get_logger

log = get_logger(__name__)

PROBLEM_JSON = "application/problem+json"

TITLES = {
    "unauthenticated": "Sesi tidak valid, silakan masuk kembali",
    "forbidden": "Anda tidak memiliki izin untuk tindakan ini",
    "queue_not_found": "Antrean tidak ditemukan",
    "invalid_request": "Permintaan tidak valid",
    "idempotency_key_reused": "Idempotency-Key sudah dipakai untuk permintaan lain",
    "payload_too_large": "Permintaan terlalu besar",
    "unsupported_media_type": "Jenis konten tidak didukung",
    "unavailable": "Layanan sedang tidak tersedia, silakan coba lagi",
    "auth_unavailable": "Layanan login sedang tidak dapat dihubungi, silakan coba lagi",
    "sync_not_found": "Sinkronisasi BPJS tidak ditemukan",
    "invalid_transition": "Status antrean tidak dapat diubah",
    "not_found": "Halaman tidak ditemukan",
    "method_not_allowed": "Metode tidak diizinkan",
    "internal_error": "Terjadi kesalahan pada sistem",
}


class ProblemDetails(BaseModel):
    """The body of every error answer (`application/problem+json`); some codes add fields,
    e.g. `queue_status` on a refused cancel."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str


class Problem(Exception):
    """An error answered as problem details; `title` defaults to the code's Indonesian title."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        title: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or TITLES.get(code, code)
        self.headers = headers
        self.extra = extra

    @classmethod
    def refused(cls, refusal: Refusal, queue_status: str) -> Problem:
        """A domain refusal, naming the ticket's status."""
        return cls(
            refusal.status,
            refusal.code,
            refusal.detail,
            title=refusal.title,
            queue_status=queue_status,
        )


def problem_response(p: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {
        "type": f"https://antrean.local/problems/{p.code.replace('_', '-')}",
        "title": p.title,
        "status": p.status,
        "detail": p.detail,
        "code": p.code,
        **p.extra,
    }
    return JSONResponse(body, status_code=p.status, media_type=PROBLEM_JSON, headers=headers)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return problem_response(exc, {**(headers or {}), **(exc.headers or {})} or None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        detail = "; ".join(
            f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}"
            for e in errs[:5]
        )
        return problem_response(Problem(422, "invalid_request", detail or "permintaan tidak valid"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        return problem_response(Problem(exc.status_code, code, str(exc.detail)), headers or None)

    for error in UNAVAILABLE_ERRORS:
        app.add_exception_handler(error, _unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", error=repr(exc))
        return problem_response(Problem(500, "internal_error", "kesalahan tak terduga"))


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    log.warning("database_unavailable", error=repr(exc))
    return problem_response(
        Problem(503, "unavailable", "Basis data tidak dapat dihubungi."), {"Retry-After": "2"}
    )


def allowed_methods(request: Request) -> str:
    """Every method some route serves on this path: the router's own 405 names only the methods
    of the first route whose path matched (`GET` where `GET, POST` are served)."""
    methods: set[str] = set()
    for route in _routes(request.app.router.routes):
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def _routes(routes: list[Any]) -> Iterator[Any]:
    # An included router is one entry of the app's routes; its own routes carry the full paths
    # (the API's routers have no prefix).
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _routes(included.routes)
        else:
            yield route
