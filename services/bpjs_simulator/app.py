"""Wiring of the BPJS simulator: `create_app(settings)`."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.bpjs_simulator import control, gateway
from services.bpjs_simulator.config import SimulatorSettings
from services.bpjs_simulator.faults import html_page
from services.bpjs_simulator.runtime import Simulator

_JSON_PATHS = ("/_sim", "/healthz", "/docs", "/openapi.json")


def create_app(settings: SimulatorSettings | None = None) -> FastAPI:
    settings = settings or SimulatorSettings()
    app = FastAPI(
        title="BPJS Antrean simulator",
        description="A fake BPJS gateway for dev and tests; never deploy it in production.",
    )
    app.state.sim = Simulator(settings)
    app.include_router(gateway.build_router(settings))
    app.include_router(control.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.exception_handler(StarletteHTTPException)
    async def gateway_error_page(request: Request, exc: StarletteHTTPException) -> Response:
        # The real gateway answers unknown paths with its web server's HTML page, not JSON.
        if request.url.path.startswith(_JSON_PATHS):
            return await http_exception_handler(request, exc)
        sim: Simulator = request.app.state.sim
        entry = sim.log.start(
            request.method, request.url.path, "-", dict(request.headers), await request.body()
        )
        entry.reply_status = exc.status_code
        return HTMLResponse(html_page(exc.status_code), status_code=exc.status_code)

    return app
