"""Shared helpers of the benchmarks: infrastructure, service processes, load, figures, results."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from services.cancel_api.config import CancelApiSettings
from shared.auth import issue_dev_token
from shared.kafka import KafkaConfig, make_admin
from tests.fixtures.infra import KafkaAccess, native_credentials, port_open, run_script

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SECRET = "bench-secret-for-staff-tokens-32-bytes!!"  # noqa: S105 - bench-only HS256 key
CLINIC, ROOM = "KLINIK-BENCH", "POLI-UMUM"
STAFF = ["cancel antrean", "create antrean", "update antrean"]
TOPICS = ("queue-cancelled", "bpjs-synced", "bpjs-sync-failed")
ADMIN_DSN = os.environ.get("DATABASE_URL", "postgresql://antrean:antrean@127.0.0.1:5432/antrean")
KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
RS_PREFIX = "/antreanrs_dev"
TICKS = os.sysconf("SC_CLK_TCK")
# The API benchmarks run the service's own pool size unless BENCH_DB_POOL_MAX says otherwise.
DB_POOL_MAX = os.environ.get(
    "BENCH_DB_POOL_MAX", str(CancelApiSettings.model_fields["db_pool_max"].default)
)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def ensure_infra() -> None:
    """Reuse PostgreSQL and Kafka when they answer; otherwise start them like `make up` does."""
    pg = urlsplit(ADMIN_DSN)
    if not port_open(pg.hostname or "127.0.0.1", pg.port or 5432):
        log("PostgreSQL not answering: starting it with infra/postgres/pg.sh")
        run_script("infra/postgres/pg.sh", "start")
    host, port = KAFKA.split(",")[0].rsplit(":", 1)
    if not port_open(host, int(port)):
        log("Kafka not answering: starting it with infra/kafka/kafka.sh")
        run_script("infra/kafka/kafka.sh", "start")


def kafka_access() -> KafkaAccess:
    """The broker's admin and service principals (as the tests' `infra` fixture finds them)."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return KafkaAccess.from_env(KAFKA)
    if native_credentials().exists():
        return KafkaAccess.from_credentials(KAFKA, native_credentials())
    return KafkaAccess(KafkaConfig(KAFKA))


def dsn_for(database: str) -> str:
    return urlunsplit(urlsplit(ADMIN_DSN)._replace(path=f"/{database}"))


def token(user: str = "u-bench", perms: Sequence[str] = STAFF, clinic: str = CLINIC) -> str:
    return issue_dev_token(
        SECRET, user_id=user, name=f"Staff {user}", clinic_id=clinic, permissions=list(perms)
    )


# --- machine, processes ---------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if "model name" in ln), "?"
    )
    mem = next(ln.split()[1] for ln in open("/proc/meminfo") if ln.startswith("MemTotal"))
    return {
        "nproc": os.cpu_count(),
        "memory_mb": int(mem) // 1024,
        "cpu_model": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


async def scrape(client: Any, url: str, name: str) -> list[Sample]:
    """The samples called `name` on a service's Prometheus page (`client`: aiohttp session)."""
    async with client.get(url) as r:
        text = await r.text()
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


async def broker_partitions() -> int:
    """Partitions the shared broker holds. Thousands left by earlier runs (a killed benchmark
    or test cannot delete its topics) cost the broker CPU even idle, counted in every figure."""
    admin = make_admin(kafka_access().admin, request_timeout_ms=10000)
    await admin.start()
    try:
        described = await admin.describe_topics(await admin.list_topics())
        return sum(len(t["partitions"]) for t in described)
    finally:
        await admin.close()


# Topic prefixes of the benchmarks' stacks (bench.stack) and of the tests (topic_prefix fixture).
RUN_TOPIC = re.compile(r"^(b[0-9a-f]{8}-[a-z_]+-|t[0-9a-f]{10}-)")


async def delete_run_topics() -> int:
    """Every benchmark's and test's topic on the shared broker (only while none is running)."""
    admin = make_admin(kafka_access().admin, request_timeout_ms=60000)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if RUN_TOPIC.match(t)]
        for i in range(0, len(names), 100):
            await admin.delete_topics(names[i : i + 100])
        return len(names)
    finally:
        await admin.close()


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{p}/task"):
                kids = Path(f"/proc/{p}/task/{tid}/children").read_text().split()
                todo.extend(int(k) for k in kids)
    return pids


def rss_mb(pid: int) -> float:
    """VmRSS of a process and its children (uvicorn workers), in MB."""
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            for ln in Path(f"/proc/{p}/status").read_text().splitlines():
                if ln.startswith("VmRSS:"):
                    total += int(ln.split()[1])
    return round(total / 1024, 1)


def cpu_s(pid: int) -> float:
    """utime + stime of a process and its live children, in seconds."""
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


class Infra:
    """CPU of this run's PostgreSQL backends, the server's background processes and the broker
    (shared with the other users of the machine: their share is included)."""

    def __init__(self, database: str) -> None:
        self.database = database
        # The native broker of `make up` (infra/kafka/kafka.sh), whose data live in .data/kafka.
        broker = str((REPO / ".data" / "kafka").resolve()).encode() + b"/"
        self.kafka_pid = next(
            (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and
             b"kafka.Kafka" in _read(p / "cmdline") and broker in
             _read(p / "cmdline")), None,
        )  # fmt: skip

    async def snapshot(self) -> dict[str, dict[int, float]]:
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            rows = await conn.fetch("select pid, datname, backend_type from pg_stat_activity")
        finally:
            await conn.close()
        mine = [r["pid"] for r in rows if r["datname"] == self.database]
        bg = [r["pid"] for r in rows if r["datname"] is None]
        out = {"postgres_backends": {p: cpu_s(p) for p in mine},
               "postgres_background": {p: cpu_s(p) for p in bg}}  # fmt: skip
        if self.kafka_pid:
            out["kafka"] = {self.kafka_pid: cpu_s(self.kafka_pid)}
        return out

    @staticmethod
    def diff(a: dict[str, dict[int, float]], b: dict[str, dict[int, float]]) -> dict[str, float]:
        return {k: round(sum(v - a.get(k, {}).get(p, 0.0) for p, v in b[k].items()), 2) for k in b}


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat (idle and iowait are
    not busy)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Share of the machine's CPU time (all cores) that was busy between two readings."""
    return round((after[0] - before[0]) / max(after[1] - before[1], 1), 3)


# --- figures and results --------------------------------------------------------------------

PCTS = (50, 90, 95, 99, 99.9)


def percentiles(values: Iterable[float], scale: float = 1000.0) -> dict[str, Any]:
    """Nearest-rank percentiles (scaled; seconds -> ms by default), min, mean, max, count."""
    xs = sorted(values)
    if not xs:
        return {"count": 0}
    out: dict[str, Any] = {"count": len(xs), "min": round(xs[0] * scale, 2)}
    for p in PCTS:
        k = max(0, min(len(xs) - 1, int(-(-p * len(xs) // 100)) - 1))
        out[f"p{p:g}"] = round(xs[k] * scale, 2)
    out["max"] = round(xs[-1] * scale, 2)
    out["mean"] = round(sum(xs) / len(xs) * scale, 2)
    return out


def median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def results_dir(quick: bool) -> Path:
    d = RESULTS / "quick" if quick else RESULTS
    d.mkdir(parents=True, exist_ok=True)
    return d


def write_result(name: str, quick: bool, data: dict[str, Any]) -> Path:
    path = results_dir(quick) / f"{name}.json"
    body = {"benchmark": name, "quick": quick, "machine": machine(), **data}
    path.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return path


def figure(quick: bool, name: str, ncols: int = 2, title: str = "") -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4.2), squeeze=False)
    fig.suptitle(title or name)
    return fig, axes[0]


def save_figure(fig: Any, quick: bool, name: str) -> Path:
    import matplotlib.pyplot as plt

    path = results_dir(quick) / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def cdf(ax: Any, values: Sequence[float], label: str) -> None:
    xs = sorted(values)
    if xs:
        ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=label)
    ax.set_ylabel("fraction")
    ax.grid(True, alpha=0.3)


@dataclass
class Row:
    """One line of the results table."""

    benchmark: str
    figure: str
    value: str
    target: str = ""
    met: bool | None = None
    met_rounds: str = ""  # "2/3": met in two of three rounds (bench/rounds.py)

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()
