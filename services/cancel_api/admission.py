"""Admission control: past its bounds the API refuses at once (503 `unavailable`, Retry-After)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Receive, Scope, Send

from services.cancel_api.errors import Problem, problem_response

REFUSED = Counter(
    "http_requests_refused_total", "Requests refused by admission control", ["reason"]
)
REFUSED_IN_FLIGHT = REFUSED.labels("in_flight")
REFUSED_POOL_WAIT = REFUSED.labels("db_pool_wait")
REFUSED_POOL_TIMEOUT = REFUSED.labels("db_pool_timeout")
REFUSED_LOOP_LAG = REFUSED.labels("loop_lag")
LOOP_LAG = Histogram(
    "event_loop_lag_seconds",
    "How late the event loop ran a 10 ms timer; cause: running (its thread was on the CPU"
    " most of that time: our own callbacks) or waiting (it was not: the machine ran other"
    " processes, or a call blocked the thread)",
    ["cause"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
LAG_RUNNING, LAG_WAITING = LOOP_LAG.labels("running"), LOOP_LAG.labels("waiting")

# What a load balancer and a browser opening the page need: never refused, never counted.
EXEMPT_PATHS = frozenset(
    {"/", "/healthz", "/readyz", "/metrics", "/ui/config", "/docs", "/redoc", "/openapi.json"}
)
EXEMPT_PREFIX = "/static/"


def overloaded(retry_after_s: int) -> Problem:
    return Problem(
        503,
        "unavailable",
        f"Server sedang sibuk; permintaan tidak diproses. Coba lagi dalam {retry_after_s} detik.",
        headers={"Retry-After": str(retry_after_s)},
    )


class LoopLag:
    """How late the event loop runs a timer: what every new request waits before its turn when
    the process has more work than CPU. Under CPU overload the requests queue in the loop and
    the sockets, not in the handlers, so the in-flight count alone does not see it."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.lag_s = 0.0
        self._due: float | None = None

    async def run(self) -> None:
        while True:
            start, cpu = time.monotonic(), time.thread_time()
            self._due = start + self.interval_s
            await asyncio.sleep(self.interval_s)
            now = time.monotonic()
            self.lag_s = now - self._due
            # A late loop either ran callbacks all along (the thread's CPU time grew with the
            # wall time) or waited for a CPU that the machine gave to other processes.
            on_cpu = time.thread_time() - cpu >= (now - start) / 2
            (LAG_RUNNING if on_cpu else LAG_WAITING).observe(max(self.lag_s, 0.0))

    def current(self) -> float:
        """The last lag measured, or how overdue the next measurement already is."""
        if self._due is None:
            return 0.0
        return max(self.lag_s, time.monotonic() - self._due)


class PoolWaits:
    """The requests now waiting for a pooled connection and since when: how far the database
    is behind, measured where the requests feel it."""

    def __init__(self) -> None:
        self._since: dict[int, float] = {}
        self._next = 0

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        key = self._next
        self._next += 1
        self._since[key] = time.monotonic()
        try:
            yield
        finally:
            del self._since[key]

    def oldest_s(self) -> float:
        """How long the longest-waiting request has waited so far (0: none waits)."""
        # A dict keeps insertion order: its first entry is the oldest still waiting.
        for since in self._since.values():
            return time.monotonic() - since
        return 0.0


class AdmissionMiddleware:
    """Counts the requests being served; past `max_in_flight`, while the event loop lags more
    than `max_loop_lag_s`, or while a request admitted earlier has waited more than
    `max_pool_wait_s` for a database connection (0: never), a request is answered 503 before
    it is read or routed, so it has done nothing and a retry (same Idempotency-Key) is safe.
    Every bound is decided here, at the door: a request once admitted is not refused for
    being slow to get a connection (only `BoundedPool`'s ceiling, for a database that gives
    none at all), so no refusal comes after a wait. One event loop per process: a plain
    counter is enough."""

    def __init__(
        self,
        app: ASGIApp,
        max_in_flight: int,
        retry_after_s: int,
        lag: LoopLag | None = None,
        max_loop_lag_s: float = 0.0,
        waits: PoolWaits | None = None,
        max_pool_wait_s: float = 0.0,
    ) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.lag = lag if max_loop_lag_s > 0 else None
        self.max_loop_lag_s = max_loop_lag_s
        self.waits = waits if max_pool_wait_s > 0 else None
        self.max_pool_wait_s = max_pool_wait_s
        self.in_flight = 0
        p = overloaded(retry_after_s)
        response = problem_response(p, p.headers)
        # Rendered once: a refusal must cost next to nothing when the process is saturated.
        self._headers = response.raw_headers
        self._body = response.body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIX):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            REFUSED_IN_FLIGHT.inc()
            await self._refuse(send)
            return
        if self.lag is not None and self.lag.current() > self.max_loop_lag_s:
            REFUSED_LOOP_LAG.inc()
            await self._refuse(send)
            return
        if self.waits is not None and self.waits.oldest_s() > self.max_pool_wait_s:
            REFUSED_POOL_WAIT.inc()
            await self._refuse(send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _refuse(self, send: Send) -> None:
        # A fresh header list: the request context middleware appends its own to it.
        headers = list(self._headers)
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": self._body})


class BoundedPool:
    """The database pool as request handlers see it: every wait for a connection is recorded
    in `waits` (the door refuses newcomers while one is too long), and a wait past
    `timeout_s`, a database that hands out no connection at all, refuses the request (503)
    before it has done anything. The outbox relay and housekeeping use the pool itself,
    unbounded and unrecorded."""

    def __init__(
        self, pool: asyncpg.Pool, waits: PoolWaits, timeout_s: float, retry_after_s: int
    ) -> None:
        self.pool = pool
        self.waits = waits
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s

    def acquire(self, *, timeout: float | None = None) -> Any:
        """A connection (`async with`); with `timeout`, the caller's own bound and asyncpg's
        TimeoutError (the readiness check)."""
        if timeout is not None:
            return self.pool.acquire(timeout=timeout)
        return self._bounded()

    @contextlib.asynccontextmanager
    async def _bounded(self) -> AsyncIterator[Any]:
        try:
            with self.waits.waiting():
                conn = await self.pool.acquire(timeout=self.timeout_s)
        except TimeoutError:
            REFUSED_POOL_TIMEOUT.inc()
            raise overloaded(self.retry_after_s) from None
        try:
            yield conn
        finally:
            # asyncpg would bound the release by the acquire's timeout: not meant for it.
            await self.pool.release(conn, timeout=30)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pool, name)
