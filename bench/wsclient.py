"""`python -m bench.wsclient CONFIG.json`: one load-generator process holding many staff sessions.

Connects `sessions` websocket sessions to the notifier (auth, wait for `ready`), prints
`ready <connected>` on stdout, then records for every (session, message) the first arrival time
(time.monotonic(), the same clock in every process) of `queue.cancelled` and `bpjs.synced`
messages. On stdin, `count` answers `count <queue.cancelled pairs received>`; `stop` (or end of
input) writes the result JSON to the config's `out` and answers `done`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import websockets

KINDS = ("queue.cancelled", "bpjs.synced")


class Recorder:
    def __init__(self) -> None:
        self.arrivals: dict[str, dict[int, list[float]]] = {k: {} for k in KINDS}
        self.duplicates = 0
        self.closed_by_server: dict[str, int] = {}
        self.failed = 0
        self.connected = 0
        self.pairs = 0


async def session(url: str, tok: str, rec: Recorder, gate: asyncio.Semaphore,
                  ready: asyncio.Event, stop: asyncio.Event) -> None:  # fmt: skip
    try:
        async with gate:
            ws = await websockets.connect(
                url, open_timeout=60, compression=None, max_queue=None, ping_interval=None
            )
            await ws.send(orjson.dumps({"type": "auth", "token": tok}).decode())
            first = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
            assert first.get("type") == "ready", first
    except Exception:
        rec.failed += 1
        return
    rec.connected += 1
    seen: set[tuple[str, int]] = set()
    arrivals = rec.arrivals
    try:
        async for raw in ws:
            now = time.monotonic()
            m = orjson.loads(raw)
            kind = m.get("type")
            if kind in arrivals:
                key = (kind, m["queue_id"])
                if key in seen:
                    rec.duplicates += 1
                    continue
                seen.add(key)
                rec.pairs += kind == "queue.cancelled"
                arrivals[kind].setdefault(m["queue_id"], []).append(now)
    except websockets.ConnectionClosed as exc:
        if not stop.is_set():
            code = str(exc.rcvd.code if exc.rcvd else "none")
            rec.closed_by_server[code] = rec.closed_by_server.get(code, 0) + 1
    finally:
        with contextlib.suppress(Exception):
            await ws.close()


def write_out(path: str, out: dict[str, Any]) -> None:
    Path(path).write_bytes(orjson.dumps(out, option=orjson.OPT_NON_STR_KEYS))


async def main(config: dict[str, Any]) -> None:
    rec = Recorder()
    stop, ready = asyncio.Event(), asyncio.Event()
    gate = asyncio.Semaphore(int(config.get("connect_concurrency", 100)))
    loop = asyncio.get_running_loop()
    tokens: list[str] = config["tokens"]
    first = config.get("first_token")  # e.g. the cancelling user's own session
    tasks = [
        asyncio.create_task(
            session(config["url"], first if (i == 0 and first) else tokens[i % len(tokens)],
                    rec, gate, ready, stop)
        )
        for i in range(int(config["sessions"]))
    ]  # fmt: skip
    while rec.connected + rec.failed < len(tasks):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    print(f"ready {rec.connected}", flush=True)

    def wait_stdin() -> None:
        while sys.stdin.readline().strip() == "count":
            print(f"count {rec.pairs}", flush=True)
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_stdin, daemon=True).start()
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    t = os.times()
    out = {
        "connected": rec.connected,
        "failed": rec.failed,
        "duplicates": rec.duplicates,
        "closed_by_server": rec.closed_by_server,
        "arrivals": rec.arrivals,
        "cpu_s": t.user + t.system,
    }
    write_out(config["out"], out)
    print("done", flush=True)


if __name__ == "__main__":
    cfg = orjson.loads(Path(sys.argv[1]).read_bytes())
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(cfg))


class Fleet:
    """The parent side: `procs` wsclient processes sharing `sessions` sessions."""

    def __init__(
        self, url: str, sessions: int, procs: int, tokens: list[str], first: str | None = None
    ) -> None:
        self.url, self.sessions, self.procs, self.tokens = url, sessions, procs, tokens
        self.first = first
        self.children: list[tuple[Any, Path]] = []

    async def start(self, limit_s: float = 180.0) -> int:
        import tempfile

        per = [self.sessions // self.procs + (i < self.sessions % self.procs)
               for i in range(self.procs)]  # fmt: skip
        for i, count in enumerate(per):
            tmp = Path(tempfile.mkdtemp(prefix="bench-ws-"))
            cfg = {
                "url": self.url,
                "sessions": count,
                "tokens": self.tokens,
                "out": str(tmp / "out.json"),
                "first_token": self.first if i == 0 else None,
            }
            (tmp / "cfg.json").write_bytes(orjson.dumps(cfg))
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.wsclient", str(tmp / "cfg.json"),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            self.children.append((proc, tmp))
        connected = 0
        for proc, _ in self.children:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), limit_s)).decode()
            connected += int(line.split()[1]) if line.startswith("ready") else 0
        return connected

    async def pairs(self) -> int:
        """queue.cancelled (session, message) pairs received so far by every process."""
        total = 0
        for proc, _ in self.children:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(b"count\n")
            await proc.stdin.drain()
            total += int((await proc.stdout.readline()).split()[1])
        return total

    async def settle(self, expected: int, quiet_s: float = 5.0, limit_s: float = 60.0) -> int:
        """Wait until `expected` pairs arrived, or nothing new for `quiet_s`, or `limit_s`."""
        end = time.monotonic() + limit_s
        last, last_change = -1, time.monotonic()
        while time.monotonic() < end:
            got = await self.pairs()
            if got >= expected:
                return got
            if got != last:
                last, last_change = got, time.monotonic()
            elif time.monotonic() - last_change > quiet_s:
                return got
            await asyncio.sleep(0.5)
        return last

    def kill(self) -> None:
        """Make sure no client process outlives its benchmark (after a failure)."""
        for proc, _ in self.children:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    async def stop(self) -> dict[str, Any]:
        merged: dict[str, dict[int, list[float]]] = {k: {} for k in KINDS}
        total: dict[str, Any] = {"duplicates": 0, "failed": 0, "connected": 0, "cpu_s": 0.0,
                                 "closed_by_server": {}}  # fmt: skip
        for proc, _ in self.children:
            assert proc.stdin is not None
            proc.stdin.write(b"stop\n")
            await proc.stdin.drain()
        for proc, tmp in self.children:
            assert proc.stdout is not None
            await asyncio.wait_for(proc.stdout.readline(), 120)
            await proc.wait()
            out = orjson.loads((tmp / "out.json").read_bytes())
            for kind, per_q in out["arrivals"].items():
                for q, times in per_q.items():
                    merged[kind].setdefault(int(q), []).extend(times)
            for k in ("duplicates", "failed", "connected", "cpu_s"):
                total[k] += out[k]
            for code, c in out["closed_by_server"].items():
                total["closed_by_server"][code] = total["closed_by_server"].get(code, 0) + c
        total["arrivals"] = merged
        return total
