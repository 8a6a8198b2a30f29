"""The BPJS Antrean endpoints: faults first, then authentication, parsing and business rules."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import date
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse
from starlette.types import Receive, Scope, Send

from services.bpjs_simulator.config import AUTH_FAILURE_MESSAGES, SimulatorSettings
from services.bpjs_simulator.faults import HTTP_ERROR_STATUS, FaultMode, FaultRule, html_page
from services.bpjs_simulator.runtime import LoggedRequest, Simulator
from services.bpjs_simulator.state import Verdict
from shared.bpjs.crypto import encrypt_response, signature

logger = logging.getLogger(__name__)
_ACCEPTED_TYPES = ("application/json", "application/x-www-form-urlencoded")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CARD = re.compile(r"^\d{13}$")
_REPLY_LOG_LIMIT = 4000
Operation = Callable[[Simulator, Mapping[str, Any], bool], Verdict]  # bool: record the effect


class BadRequest(Exception):
    """A malformed request; BPJS answers it as a business refusal (code 201)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DroppedReply(Response):
    """Sends the status line and headers, then returns: uvicorn closes the connection mid-reply."""

    def __init__(self, announced_length: int) -> None:
        super().__init__(status_code=200)
        self.announced_length = announced_length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(self.announced_length).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})


def text_field(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)  # numbers are accepted where BPJS documents strings
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadRequest(f"{name} tidak boleh kosong")
    if not isinstance(value, str):
        raise BadRequest(f"{name} tidak valid")
    return value.strip()


def int_field(body: Mapping[str, Any], name: str) -> int:
    value = body.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadRequest(f"{name} tidak boleh kosong")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())  # "99" is as good as 99
    raise BadRequest(f"{name} tidak valid")


def _rs_batal(sim: Simulator, body: Mapping[str, Any], record: bool) -> Verdict:
    kodebooking, keterangan = text_field(body, "kodebooking"), text_field(body, "keterangan")
    return sim.state.cancel_rs(kodebooking, keterangan, sim.options, record)


def _fktp_batal(sim: Simulator, body: Mapping[str, Any], record: bool) -> Verdict:
    tanggal, kodepoli = text_field(body, "tanggalperiksa"), text_field(body, "kodepoli")
    nomorkartu, alasan = text_field(body, "nomorkartu"), text_field(body, "alasan")
    if not _DATE.match(tanggal) or not _is_date(tanggal):
        raise BadRequest("tanggalperiksa tidak valid, format YYYY-MM-DD")
    if not _CARD.match(nomorkartu):
        raise BadRequest("nomorkartu tidak valid, harus 13 digit")
    return sim.state.cancel_fktp((tanggal, kodepoli, nomorkartu), alasan, sim.options, record)


def _rs_add(sim: Simulator, body: Mapping[str, Any], record: bool) -> Verdict:
    kodebooking = text_field(body, "kodebooking")
    text_field(body, "tanggalperiksa")
    text_field(body, "kodepoli")
    return sim.state.add(kodebooking, dict(body), record)


def _rs_updatewaktu(sim: Simulator, body: Mapping[str, Any], record: bool) -> Verdict:
    kodebooking = text_field(body, "kodebooking")
    taskid, waktu = int_field(body, "taskid"), int_field(body, "waktu")
    return sim.state.update_task(kodebooking, taskid, waktu, sim.options, record)


def _rs_getlisttask(sim: Simulator, body: Mapping[str, Any], record: bool) -> Verdict:
    return sim.state.list_tasks(text_field(body, "kodebooking"))


# (service, operation) -> (path under the service prefix, handler)
OPERATIONS: dict[tuple[str, str], tuple[str, Operation]] = {
    ("antreanrs", "batal"): ("antrean/batal", _rs_batal),
    ("antreanrs", "add"): ("antrean/add", _rs_add),
    ("antreanrs", "updatewaktu"): ("antrean/updatewaktu", _rs_updatewaktu),
    ("antreanrs", "getlisttask"): ("antrean/getlisttask", _rs_getlisttask),
    ("antreanfktp", "batal"): ("antrean/batal", _fktp_batal),
}


def build_router(settings: SimulatorSettings) -> APIRouter:
    router = APIRouter()
    prefixes = {"antreanrs": settings.rs_prefix, "antreanfktp": settings.fktp_prefix}
    for (service, op), (path, operation) in OPERATIONS.items():
        url = f"{prefixes[service].rstrip('/')}/{path}"
        endpoint = _endpoint(service, op, operation)
        router.add_api_route(url, endpoint, methods=["POST"], include_in_schema=False)
    return router


def _endpoint(
    service: str, op: str, operation: Operation
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await handle(request, service, op, operation)

    return endpoint


async def handle(request: Request, service: str, op: str, operation: Operation) -> Response:
    sim: Simulator = request.app.state.sim
    route = f"{service}:{op}"
    raw = await request.body()
    entry = sim.log.start(request.method, request.url.path, route, dict(request.headers), raw)
    sim.state.calls[route] += 1
    rule = sim.faults.take(route)
    if rule is not None:
        entry.note = f"fault #{rule.id} {rule.mode.value}"
        if rule.latency_ms:
            await asyncio.sleep(rule.latency_ms / 1000)
        early = await _gateway_fault(request, rule, sim)
        if early is not None and await request.is_disconnected():
            entry.note += ": the client gave up first, no reply sent"
            return early
        if early is not None:
            return _finish(entry, route, early)
    verdict = _verdict(request, raw, sim, operation, rule, entry)
    reply = _reply(service, verdict, sim, request.headers.get("x-timestamp", ""))
    if rule is not None and rule.mode is FaultMode.DROP_REPLY:
        # The state change above is kept: the client must learn it from its retry.
        logger.info("%s: dropping the reply of a call that was applied", route)
        return DroppedReply(len(reply))
    answer = Response(reply, status_code=verdict.http_status, media_type="application/json")
    return _finish(entry, route, answer)


async def _gateway_fault(request: Request, rule: FaultRule, sim: Simulator) -> Response | None:
    """Faults the gateway produces before the service runs: nothing in the state changes."""
    if rule.mode is FaultMode.HANG:
        # Held until the client gives up; the cap keeps a forgotten rule from leaking tasks.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(sim.settings.max_hang_s):
                await _disconnected(request)
        return HTMLResponse(html_page(504), status_code=504)
    if rule.mode in HTTP_ERROR_STATUS:
        status = HTTP_ERROR_STATUS[rule.mode]
        return HTMLResponse(html_page(status), status_code=status)
    if rule.mode is FaultMode.NON_JSON:
        return PlainTextResponse(rule.message or "Service sedang sibuk, silakan coba lagi")
    return None


def _verdict(
    request: Request,
    raw: bytes,
    sim: Simulator,
    operation: Operation,
    rule: FaultRule | None,
    entry: LoggedRequest,
) -> Verdict:
    failure = authentication_failure(request.headers, sim)
    if failure is not None:
        header, why = failure
        entry.note = "; ".join(filter(None, [entry.note, f"authentication failed: {why}"]))
        return _auth_refusal(sim, header)
    if rule is not None and rule.mode is FaultMode.BUSINESS_201:
        return Verdict(rule.code, rule.message or "Gagal memproses permintaan")
    record = rule is None or rule.mode is not FaultMode.NOT_RECORDED
    try:
        verdict = operation(sim, parse_body(request.headers.get("content-type"), raw), record)
    except BadRequest as refusal:
        return Verdict(201, refusal.message)
    if not record:
        sim.state.not_recorded[entry.route] += 1
        entry.note = f"{entry.note}: answered {verdict.code} {verdict.message}, nothing recorded"
    return verdict


def _auth_refusal(sim: Simulator, header: str) -> Verdict:
    options = sim.options
    message: str = getattr(options, AUTH_FAILURE_MESSAGES[header])
    status = options.auth_failure_http_status
    if status is None:
        return Verdict(201, message)  # what BPJS does: HTTP 200, refused in `metadata`
    return Verdict(status, message, http_status=status)


def authentication_failure(headers: Mapping[str, str], sim: Simulator) -> tuple[str, str] | None:
    """(header, why) of the first of the gateway's checks that fails, or None.

    Secrets are compared in constant time against the credentials accepted now.
    """
    creds = sim.credentials
    timestamp = headers.get("x-timestamp", "")
    if headers.get("x-cons-id", "") != creds.cons_id:
        return "X-cons-id", "X-cons-id"
    if not timestamp.isdigit():
        return "X-timestamp", "X-timestamp"
    expected = signature(creds.cons_id, creds.secret_key.get_secret_value(), timestamp)
    if not hmac.compare_digest(headers.get("x-signature", "").encode(), expected.encode()):
        return "X-signature", "X-signature"
    user_key = creds.user_key.get_secret_value().encode()
    if not hmac.compare_digest(headers.get("user_key", "").encode(), user_key):
        return "user_key", "user_key"
    skew = sim.options.max_clock_skew_s
    if skew is not None and abs(time.time() - int(timestamp)) > skew:
        return "X-timestamp", "X-timestamp outside the allowed clock skew"
    return None


def parse_body(content_type: str | None, raw: bytes) -> Mapping[str, Any]:
    """JSON object body under either accepted content type (media type compared lower-case)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media not in _ACCEPTED_TYPES:
        raise BadRequest("Content-Type tidak didukung")
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest("Format request tidak valid, body harus JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("Format request tidak valid, body harus objek JSON")
    return body


def _reply(service: str, verdict: Verdict, sim: Simulator, timestamp: str) -> bytes:
    # antreanrs answers `metadata`; antreanfktp answers `metaData`, as seen in the wild.
    key = "metadata" if service == "antreanrs" else "metaData"
    document: dict[str, Any] = {key: {"message": verdict.message, "code": verdict.code}}
    if verdict.response is not None:
        creds = sim.credentials
        secret = creds.secret_key.get_secret_value()
        document["response"] = encrypt_response(creds.cons_id, secret, timestamp, verdict.response)
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _finish(entry: LoggedRequest, route: str, response: Response) -> Response:
    entry.reply_status = response.status_code
    entry.reply_body = bytes(response.body).decode("utf-8", errors="replace")[:_REPLY_LOG_LIMIT]
    logger.info("%s -> HTTP %s %s", route, response.status_code, entry.note or "")
    return response


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True
