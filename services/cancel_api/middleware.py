"""ASGI middleware: request ids, trace context and logging context, metrics, and the request
body size limit."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.cancel_api.errors import Problem, problem_response
from shared import tracing

HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route", "status"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


# A client's X-Request-ID is kept only when it is a short token of safe characters: anything
# else (newlines, quotes, long strings) would reach log lines, the response and the audit table.
_REQUEST_ID = "[A-Za-z0-9._:-]{1,64}"
REQUEST_ID_PATTERN = f"^{_REQUEST_ID}$"
_SAFE_REQUEST_ID = re.compile(_REQUEST_ID.encode())


def request_id_of(incoming: bytes | None) -> str:
    """The client's request id when it is safe, else a fresh one."""
    if incoming is not None and _SAFE_REQUEST_ID.fullmatch(incoming):
        return incoming.decode("ascii")
    return uuid.uuid4().hex


# (method, route, status) -> its histogram child: `labels()` validates and locks on every call.
_LATENCY_CHILDREN: dict[tuple[str, str, int], Any] = {}


def _latency_child(method: str, route: str, status: int) -> Any:
    key = (method, route, status)
    child = _LATENCY_CHILDREN.get(key)
    if child is None:
        child = _LATENCY_CHILDREN[key] = HTTP_LATENCY.labels(method, route, str(status))
    return child


class RequestContextMiddleware:
    """Gives every request an id (X-Request-ID in and out) bound into every log line, and a span
    of the caller's trace (a valid `traceparent`; anything else starts a new trace) whose
    context goes back in `traceresponse`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = request_id_of(headers.get(b"x-request-id"))
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = {"code": 500}
        method = scope["method"]
        with tracing.span(
            method,
            parent=tracing.parse_traceparent(headers.get(b"traceparent")),
            kind=tracing.SpanKind.SERVER,
            attributes={"http.request.method": method, "request_id": request_id},
        ) as span:
            trace_header = str(span.traceparent).encode()

            async def send_with_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                    message.setdefault("headers", []).extend(
                        ((b"x-request-id", request_id.encode()), (b"traceresponse", trace_header))
                    )
                await send(message)

            try:
                await self.app(scope, receive, send_with_id)
            finally:
                route = scope.get("route")
                path = getattr(route, "path", "unmatched")
                _latency_child(method, path, status["code"]).observe(time.perf_counter() - started)
                span.rename(f"{method} {path}")
                span.set(**{"http.route": path, "http.response.status_code": status["code"]})
                if status["code"] >= 500:
                    span.fail(f"HTTP {status['code']}")


class BodyLimitMiddleware:
    """Refuses bodies over `max_bytes` (declared or streamed) with 413 before any handler runs."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0
        chunks: list[Message] = []
        while True:  # read the body first so an oversized stream is refused before any work
            message = await receive()
            if message["type"] != "http.request":
                chunks.append(message)
                break
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(message)
            if not message.get("more_body"):
                break

        async def replay() -> Message:
            return chunks.pop(0) if chunks else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response: Any = problem_response(
            Problem(413, "payload_too_large", f"Body melebihi {self.max_bytes} byte.")
        )
        await response(scope, receive, send)
