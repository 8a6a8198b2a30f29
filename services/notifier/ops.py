"""The notifier's plain-HTTP endpoints (/healthz, /readyz, /metrics) and its ops-port server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from http import HTTPStatus

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from shared.logging import get_logger
from shared.service_kit import ReadinessCheck, readiness

log = get_logger(__name__)


def response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def json_response(status: HTTPStatus, obj: object) -> Response:
    return response(status, orjson.dumps(obj), "application/json")


def path_of(request: Request) -> str:
    return request.path.split("?", 1)[0]


class OpsEndpoints:
    """Liveness, readiness (its checks answer) and the Prometheus metrics of one registry."""

    def __init__(self, registry: CollectorRegistry, checks: Mapping[str, ReadinessCheck]) -> None:
        self.registry = registry
        self.checks = checks

    async def answer(self, path: str, *, metrics: bool) -> Response:
        """The response to a GET of `path`; `/metrics` only where `metrics` allows it."""
        if path == "/healthz":
            return json_response(HTTPStatus.OK, {"status": "ok"})
        if path == "/readyz":
            ok, body = await readiness(self.checks)
            return json_response(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, body)
        if path == "/metrics" and metrics:
            return response(HTTPStatus.OK, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        return json_response(HTTPStatus.NOT_FOUND, {"status": 404, "code": "not_found"})

    @contextlib.asynccontextmanager
    async def serving(self, host: str, port: int) -> AsyncIterator[Server]:
        """A server that answers every request itself: no websocket is ever opened on it."""

        async def process_request(_: ServerConnection, request: Request) -> Response:
            return await self.answer(path_of(request), metrics=True)

        async def no_websocket(conn: ServerConnection) -> None:  # never reached
            await conn.close(1008, "not a websocket endpoint")

        server = await serve(
            no_websocket, host, port, process_request=process_request, server_header=None
        )
        log.info("ops_listening", host=host, port=port)
        try:
            yield server
        finally:
            server.close()
            await server.wait_closed()
