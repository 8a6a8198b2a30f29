"""Service processes and one benchmark's stack (database, topics, services on free ports),
plus the load generator's HTTP client and ticket seeding."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from bench.common import (
    ADMIN_DSN,
    CLINIC,
    ROOM,
    RS_PREFIX,
    SECRET,
    _tree,
    cpu_s,
    dsn_for,
    kafka_access,
    rss_mb,
)
from shared.bpjs import DEV_CREDENTIALS
from shared.config import API_DB_ROLE, WORKER_DB_ROLE
from shared.db import migrate
from shared.kafka import KafkaConfig
from tests.fixtures.infra import (
    KafkaAccess,
    delete_topics,
    enable_role_logins,
    free_port,
    role_dsn,
)
from tests.fixtures.processes import ServiceProcess


class Service(ServiceProcess):
    """A service subprocess as the tests run it, plus its RSS and CPU over restarts."""

    def __init__(self, name: str, module: str, env: dict[str, str], health: str | None) -> None:
        super().__init__(module, env, health)
        self.name = name
        self.cpu_before = 0.0  # CPU seconds of earlier (killed) incarnations

    def start(self, timeout: float = 90.0) -> Service:
        super().start(timeout)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_mb(self) -> float:
        return rss_mb(self.pid) if self.alive() else 0.0

    def cpu_s(self) -> float:
        return self.cpu_before + (cpu_s(self.pid) if self.alive() else 0.0)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole tree (no shutdown hook runs, as in a crash)."""
        if self.alive():
            self.cpu_before += cpu_s(self.pid)
            for p in reversed(_tree(self.pid)):
                with contextlib.suppress(OSError):
                    os.kill(p, signal.SIGKILL)
            assert self.proc is not None
            self.proc.wait(10)


@dataclass
class Stack:
    name: str
    access: KafkaAccess | None = None  # None: the shared broker's (bench.common.kafka_access)
    database: str = ""
    prefix: str = ""
    services: dict[str, Service] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def kafka(self) -> KafkaConfig:
        """The admin principal (topics, ACLs, the benchmark's own clients)."""
        assert self.access is not None, "create() first"
        return self.access.admin

    @property
    def dsn(self) -> str:
        return dsn_for(self.database)

    async def create(self) -> Stack:
        """A fresh database from the migrations and a topic prefix of this run's own."""
        tag = uuid.uuid4().hex[:8]
        self.database = f"bench_{self.name}_{tag}"
        self.prefix = f"b{tag}-{self.name}-"
        admin = await asyncpg.connect(ADMIN_DSN, timeout=10)
        try:
            await admin.execute(f'create database "{self.database}"')
            await migrate(self.dsn)
            await enable_role_logins(admin)
        finally:
            await admin.close()
        self.access = self.access or kafka_access()
        await self.access.create_topics(self.prefix)  # with the services' ACLs
        return self

    def base_env(self, service: str, **extra: str) -> dict[str, str]:
        """Test-mode settings; the API and the worker connect as their own database roles, and
        each service with its own Kafka principal (`service`: api|worker|notifier)."""
        assert self.access is not None
        return {
            "APP_ENV": "test",
            "DATABASE_URL": self.dsn,
            **self.access.kafka_env(service),
            "KAFKA_TOPIC_PREFIX": self.prefix,
            "AUTH_JWT_SECRET": SECRET,
            "LOG_LEVEL": "INFO",
            **extra,
        }

    def _add(self, name: str, module: str, env: dict[str, str], health: str) -> Service:
        svc = Service(name, module, env, health)
        self.services[name] = svc
        return svc.start()

    def start_api(self, **extra: str) -> Service:
        port = self.ports["api"] = free_port()
        env = self.base_env(
            "api", CANCEL_API_PORT=str(port), DATABASE_URL=role_dsn(self.dsn, API_DB_ROLE), **extra
        )
        return self._add("api", "services.cancel_api", env, f"http://127.0.0.1:{port}/healthz")

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    def start_sim(self, **extra: str) -> Service:
        port = self.ports["sim"] = free_port()
        env = {
            "APP_ENV": "test",
            "BPJS_SIM_PORT": str(port),
            "BPJS_SIM_RS_PREFIX": RS_PREFIX,
            "BPJS_SIM_DEV_AUTOCREATE": "true",
            "BPJS_SIM_CONS_ID": DEV_CREDENTIALS.cons_id,
            "BPJS_SIM_SECRET_KEY": DEV_CREDENTIALS.secret_key.get_secret_value(),
            "BPJS_SIM_USER_KEY": DEV_CREDENTIALS.user_key.get_secret_value(),
            "BPJS_SIM_LOG_LEVEL": "WARNING",
            **extra,
        }
        return self._add("sim", "services.bpjs_simulator", env, f"{self.sim_url}/healthz")

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['sim']}"

    def start_worker(self, **extra: str) -> Service:
        port = self.ports["worker"] = free_port()
        env = self.base_env(
            "worker",
            WORKER_PORT=str(port),
            DATABASE_URL=role_dsn(self.dsn, WORKER_DB_ROLE),
            WORKER_ID=f"bench-{self.name}",
            WORKER_CONSUMER_GROUP=f"{self.prefix}worker",
            BPJS_BASE_URL=f"{self.sim_url}{RS_PREFIX}",
            BPJS_SERVICE="antreanrs",
            **extra,
        )
        return self._add(
            "worker", "services.bpjs_sync_worker", env, f"http://127.0.0.1:{port}/healthz"
        )

    def start_notifier(self, **extra: str) -> Service:
        port = self.ports["notifier"] = free_port()
        # The benchmark fleets open thousands of sessions with one user's token.
        caps = {"NOTIFIER_MAX_CONNECTIONS": "100000", "NOTIFIER_MAX_CONNECTIONS_PER_USER": "100000"}
        env = self.base_env("notifier", NOTIFIER_PORT=str(port), **{**caps, **extra})
        # Ready, not only alive: before it reaches Kafka the notifier closes sessions with 1013.
        return self._add("notifier", "services.notifier", env, f"http://127.0.0.1:{port}/readyz")

    def start_pipeline(self) -> None:
        """Every service of the cancel flow: simulator, API (with its relay), worker, notifier;
        the worker's rate limit out of the way, so the pipeline, not BPJS's quota, is measured."""
        self.start_sim()
        self.start_api()
        self.start_worker(SYNC_RATE_PER_S="1000")
        self.start_notifier()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ports['notifier']}/ws"

    def usage(self, cancels: int) -> dict[str, Any]:
        """RSS (MB) now and CPU seconds per 1,000 cancels of every service process."""
        per = 1000 / max(cancels, 1)
        return {
            n: {"rss_mb": s.rss_mb(), "cpu_s": round(s.cpu_s(), 2),
                "cpu_s_per_1000_cancels": round(s.cpu_s() * per, 3)}
            for n, s in self.services.items()
        }  # fmt: skip

    def cpu_snapshot(self) -> dict[str, float]:
        return {n: s.cpu_s() for n, s in self.services.items()}

    async def destroy(self) -> None:
        for svc in reversed(list(self.services.values())):
            svc.terminate(15.0)
        if self.database and not os.environ.get("BENCH_KEEP_DB"):
            admin = await asyncpg.connect(ADMIN_DSN, timeout=10)
            try:
                await admin.execute(f'drop database if exists "{self.database}" with (force)')
            finally:
                await admin.close()
        if self.prefix and self.access is not None and not os.environ.get("BENCH_KEEP_DB"):
            # Thousands of partitions left by earlier runs cost the broker CPU at idle, and
            # that CPU would be counted in the next runs' figures.
            await delete_topics(self.kafka, self.prefix)

    async def sim_fault(self, **rule: Any) -> None:
        async with httpx.AsyncClient(base_url=self.sim_url) as c:
            (await c.post("/_sim/faults", json=rule)).raise_for_status()

    async def sim_stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.sim_url, timeout=30) as c:
            r = await c.get("/_sim/stats")
            r.raise_for_status()
            return dict(r.json())


async def seed_tickets(dsn: str, n: int, *, bpjs_every: int = 0, tag: str = "") -> list[int]:
    """`n` waiting tickets (every `bpjs_every`-th a BPJS one) inserted directly; their ids."""
    conn = await asyncpg.connect(dsn)
    try:
        start = int(await conn.fetchval("select coalesce(max(ticket_seq), 0) from queue_ticket"))
        rows = await conn.fetch(
            "insert into queue_ticket (clinic_id, room_id, service_date, ticket_seq,"
            " ticket_number, patient_mrn, patient_name, payer, bpjs)"
            " select $1, $2, current_date, g, 'A-' || g, 'RM-' || g, 'Pasien ' || g,"
            " case when $5 > 0 and g % $5 = 0 then 'BPJS' else 'UMUM' end,"
            " case when $5 > 0 and g % $5 = 0"
            "  then jsonb_build_object('booking_code', $6 || g) end"
            " from generate_series($3::int, $4::int) g order by g returning id",
            CLINIC,
            ROOM,
            start + 1,
            start + n,
            bpjs_every,
            f"BK{tag}-",
        )
    finally:
        await conn.close()
    return [int(r["id"]) for r in rows]


def http_client(limit: int) -> aiohttp.ClientSession:
    """The load generator's HTTP client: aiohttp, not httpx, whose per-request CPU would make
    the load generator, not the API, the bottleneck on this 2-core machine (bench/README.md)."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))


async def api_metrics(url: str) -> list[Metric]:
    """One scrape of the API's /metrics (served outside production on the public port)."""
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{url}/metrics")).text
    return list(text_string_to_metric_families(text))


def refusals_in(families: list[Metric]) -> dict[str, float]:
    """The API's `http_requests_refused_total` by reason."""
    return {
        sample.labels["reason"]: sample.value
        for family in families
        if family.name == "http_requests_refused"
        for sample in family.samples
        if sample.name == "http_requests_refused_total"
    }


async def refusals(url: str) -> dict[str, float]:
    """`refusals_in` of a scrape made now."""
    return refusals_in(await api_metrics(url))


def observed_over(
    families: list[Metric], histogram: str, label: str, over_s: float = 0.05
) -> dict[str, float]:
    """How many observations of one of the API's histograms have been over `over_s` so far,
    by `label` (`over_s` must be one of its bucket bounds)."""
    total: dict[str, float] = {}
    within: dict[str, float] = {}
    for family in families:
        if family.name != histogram:
            continue
        for sample in family.samples:
            key = sample.labels[label]
            if sample.name.endswith("_count"):
                total[key] = sample.value
            elif sample.name.endswith("_bucket") and float(sample.labels["le"]) == over_s:
                within[key] = sample.value
    return {key: n - within.get(key, 0.0) for key, n in total.items()}


def long_gc_pauses_in(families: list[Metric]) -> dict[str, float]:
    """The API's garbage-collector pauses over 50 ms so far, by generation."""
    return observed_over(families, "python_gc_pause_seconds", "generation")


def late_loops_in(families: list[Metric]) -> dict[str, float]:
    """The API's event-loop lags over 50 ms so far, by cause (running: its own callbacks;
    waiting: the machine ran other processes)."""
    return observed_over(families, "event_loop_lag_seconds", "cause")


def refused_between(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """The refusals by reason between two `refusals()` scrapes (reasons with none left out)."""
    return {k: int(v - before.get(k, 0.0)) for k, v in after.items() if v > before.get(k, 0.0)}


async def cancel(
    client: aiohttp.ClientSession, url: str, qid: int, tok: str, key: str | None = None
) -> tuple[int, float]:
    """One cancel, with `key` as its Idempotency-Key if given (the staff UI always sends one);
    (status or 0 on a transport error, seconds)."""
    headers = {"Authorization": f"Bearer {tok}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    started = time.monotonic()
    try:
        async with client.post(f"{url}/antrian_ruangan/batal/{qid}", headers=headers) as r:
            await r.read()
            status = r.status
    except (aiohttp.ClientError, TimeoutError):
        status = 0
    return status, time.monotonic() - started
