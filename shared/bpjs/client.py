"""Async client of the BPJS Antrean web services (antreanrs, antreanfktp) over one aiohttp pool.

aiohttp because its CPU cost per call is low: the sync worker makes two calls per cancellation
on one event loop, so the client's own CPU bounds its throughput (bench/README.md).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import aiohttp
import httpx
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from shared.bpjs.credentials import BpjsCredentials
from shared.bpjs.crypto import ResponseDecryptError, decrypt_response, signature
from shared.bpjs.outcome import Outcome, OutcomeKind, classify, compile_auth_patterns, is_success

Service = Literal["antreanrs", "antreanfktp"]
ContentType = Literal["json", "form"]

# BPJS's gateway once required this exact spelling with a JSON body; some clients still send it.
_CONTENT_TYPES: dict[ContentType, str] = {
    "json": "application/json",
    "form": "Application/x-www-form-urlencoded",
}
_EXCERPT_LEN = 500
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallResult:
    """What one call produced; transport failures are outcomes here, never exceptions."""

    outcome: Outcome
    http_status: int | None
    elapsed: float  # seconds
    body_excerpt: str
    data: Any = None  # decrypted `response` of read calls (getlisttask), else None

    @property
    def ok(self) -> bool:
        return is_success(self.outcome.kind)


class BpjsClient:
    """Signs and sends Antrean calls; credentials come with each call (one per clinic)."""

    def __init__(
        self,
        base_url: str,
        *,
        service: Service = "antreanrs",
        content_type: ContentType = "json",
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        write_timeout: float = 5.0,
        pool_timeout: float = 5.0,
        max_connections: int = 20,
        clock: Callable[[], float] = time.time,
        auth_error_patterns: Sequence[str] = (),
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.service: Service = service
        self.content_type: ContentType = content_type
        self._clock = clock
        # Operators' extra wordings of an authentication refusal; a bad regex fails here, at once.
        compile_auth_patterns(auth_error_patterns)
        self._auth_error_patterns = tuple(auth_error_patterns)
        self._max_connections = max_connections
        # aiohttp has no pool timeout of its own: its `connect` covers waiting for a free
        # connection plus opening one, `sock_connect` the opening alone (TCP and TLS).
        # Nor a write timeout: the request is written right after the connection is had and
        # its bytes go to the transport buffer (a BPJS body is < 1 KiB, far below the 64 KiB
        # at which a write would wait); `total` bounds the whole call by the sum of the four
        # limits, so a write that stalls still ends (so does a reply trickling in forever).
        self._timeout = aiohttp.ClientTimeout(
            total=connect_timeout + read_timeout + write_timeout + pool_timeout,
            connect=pool_timeout + connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        # verify=True is deliberate and not a parameter: trust-all TLS is what not to copy.
        # httpx's context: certifi's CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR when set.
        self._ssl = httpx.create_ssl_context(verify=True)
        # Proxies from the environment (HTTP(S)_PROXY, NO_PROXY), read once, not per request.
        self._proxy: URL | None = None
        self._proxy_auth: aiohttp.BasicAuth | None = None
        try:
            self._proxy, self._proxy_auth = get_env_proxy_for_url(URL(self.base_url))
        except LookupError:
            pass
        self._session: aiohttp.ClientSession | None = None  # made in the loop, at first call
        self._closed = False

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            if self._closed:
                raise RuntimeError("this BpjsClient is closed")
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=0, ssl=self._ssl, keepalive_timeout=5.0
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                cookie_jar=aiohttp.CookieJar(unsafe=True),  # per client, IP hosts too
                trust_env=False,  # proxies were read once above, not per request in a thread
                raise_for_status=False,
            )
        return self._session

    async def __aenter__(self) -> BpjsClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def cancel_rs(
        self, creds: BpjsCredentials, kodebooking: str, keterangan: str
    ) -> CallResult:
        """antreanrs `antrean/batal`."""
        self._require("antreanrs")
        body = {"kodebooking": kodebooking, "keterangan": keterangan}
        return await self._call(creds, "antrean/batal", body)

    async def cancel_fktp(
        self,
        creds: BpjsCredentials,
        tanggalperiksa: str,
        kodepoli: str,
        nomorkartu: str,
        alasan: str,
    ) -> CallResult:
        """antreanfktp `antrean/batal`; tanggalperiksa is YYYY-MM-DD."""
        self._require("antreanfktp")
        body = {
            "tanggalperiksa": tanggalperiksa,
            "kodepoli": kodepoli,
            "nomorkartu": nomorkartu,
            "alasan": alasan,
        }
        return await self._call(creds, "antrean/batal", body)

    async def update_task(
        self, creds: BpjsCredentials, kodebooking: str, taskid: int, waktu_ms: int
    ) -> CallResult:
        """antreanrs `antrean/updatewaktu` (taskid 99 = tidak hadir/batal); waktu in epoch ms."""
        self._require("antreanrs")
        body = {"kodebooking": kodebooking, "taskid": taskid, "waktu": waktu_ms}
        return await self._call(creds, "antrean/updatewaktu", body)

    async def get_list_task(self, creds: BpjsCredentials, kodebooking: str) -> CallResult:
        """antreanrs `antrean/getlisttask`; `CallResult.data` holds the decrypted task list."""
        self._require("antreanrs")
        return await self._call(creds, "antrean/getlisttask", {"kodebooking": kodebooking}, True)

    async def add_antrean(self, creds: BpjsCredentials, booking: Mapping[str, Any]) -> CallResult:
        """antreanrs `antrean/add` with the booking fields as BPJS names them."""
        self._require("antreanrs")
        return await self._call(creds, "antrean/add", dict(booking))

    def _require(self, service: Service) -> None:
        if self.service != service:
            raise ValueError(f"this call belongs to {service}, the client is for {self.service}")

    def _headers(self, creds: BpjsCredentials, timestamp: str) -> dict[str, str]:
        secret = creds.secret_key.get_secret_value()
        return {
            "X-cons-id": creds.cons_id,
            "X-timestamp": timestamp,
            "X-signature": signature(creds.cons_id, secret, timestamp),
            "user_key": creds.user_key.get_secret_value(),
            "Content-Type": _CONTENT_TYPES[self.content_type],
            "Accept": "application/json",
        }

    async def _call(
        self, creds: BpjsCredentials, path: str, body: dict[str, Any], decrypt: bool = False
    ) -> CallResult:
        # A fresh UTC epoch timestamp per call: the signature and the reply key both depend on it.
        timestamp = str(int(self._clock()))
        content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        url = f"{self.base_url}/{path}"
        started = time.monotonic()
        status: int | None = None
        text = ""
        try:
            async with self._http().post(
                url,
                data=content,
                headers=self._headers(creds, timestamp),
                allow_redirects=False,
                proxy=self._proxy,
                proxy_auth=self._proxy_auth,
            ) as response:
                # The declared charset, else UTF-8 (aiohttp's default); never raises.
                status, text = response.status, await response.text(errors="replace")
                kind_of_body = response.headers.get("Content-Type")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            status, text = None, ""
            outcome = classify(_describe(exc), None, None)
        else:
            outcome = classify(
                None,
                status,
                text,
                content_type=kind_of_body,
                auth_error_patterns=self._auth_error_patterns,
            )
        elapsed = time.monotonic() - started
        data = None
        if decrypt and outcome.kind is OutcomeKind.SUCCESS:
            outcome, data = _decrypted(outcome, creds, timestamp, text)
        logger.info(
            "bpjs call cons_id=%s path=%s status=%s outcome=%s code=%s elapsed=%.3fs",
            creds.cons_id,
            path,
            status,
            outcome.kind.value,
            outcome.code,
            elapsed,
        )
        return CallResult(outcome, status, elapsed, text[:_EXCERPT_LEN], data)


def _decrypted(
    outcome: Outcome, creds: BpjsCredentials, timestamp: str, text: str
) -> tuple[Outcome, Any]:
    """Decrypt `response` with the key of the request's own timestamp."""
    document = json.loads(text)
    encrypted = document.get("response") if isinstance(document, dict) else None
    if not isinstance(encrypted, str) or not encrypted:
        return outcome, None
    try:
        secret = creds.secret_key.get_secret_value()
        return outcome, decrypt_response(creds.cons_id, secret, timestamp, encrypted)
    except ResponseDecryptError as exc:
        # A reply we cannot read proves nothing; a later call may get a clean one.
        detail = f"undecryptable response: {exc}"[:200]
        return Outcome(OutcomeKind.RETRYABLE, outcome.code, outcome.message, detail), None


def _describe(exc: BaseException) -> str:
    """Exception class and message; aiohttp messages carry no headers, so no secret leaks."""
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
