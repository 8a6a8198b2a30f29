"""The staff UI: static files (no build step) served at `/`, and the UI's runtime config."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse

from services.cancel_api.config import CancelApiSettings
from services.cancel_api.errors import Problem

STATIC = Path(__file__).resolve().parents[1] / "static"
TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
}
# The page holds a staff token: no caching, no framing, no referrer, scripts only from here.
HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def ui_router(settings: CancelApiSettings) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    files = {p.name: p for p in STATIC.iterdir() if p.suffix in TYPES}
    csp = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {settings.notifier_public_url}; frame-ancestors 'none'"
    )

    @router.get("/")
    async def index() -> FileResponse:
        return FileResponse(
            STATIC / "index.html",
            media_type="text/html",
            headers={**HEADERS, "Content-Security-Policy": csp},
        )

    @router.get("/static/{name}")
    async def asset(name: str) -> FileResponse:
        path = files.get(name)  # only files that exist at start-up: no path tricks
        if path is None:
            raise Problem(404, "not_found", f"berkas {name[:60]!r} tidak ada")
        return FileResponse(path, media_type=TYPES[path.suffix], headers=HEADERS)

    @router.get("/ui/config")
    async def config() -> JSONResponse:
        return JSONResponse({"notifier_url": settings.notifier_public_url}, headers=HEADERS)

    return router
