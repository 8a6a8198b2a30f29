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
from typing import Any, cast

import orjson
from websockets.client import ClientProtocol
from websockets.http11 import Response
from websockets.uri import parse_uri

KINDS = ("queue.cancelled", "bpjs.synced")
QUEUE_CANCELLED = b'{"type":"queue.cancelled",'  # how the notifier renders one (orjson)
QUEUE_ID = b'"queue_id":'


class Recorder:
    def __init__(self) -> None:
        self.arrivals: dict[str, dict[int, list[float]]] = {k: {} for k in KINDS}
        self.duplicates = 0
        self.closed_by_server: dict[str, int] = {}
        self.failed = 0
        self.connected = 0
        self.pairs = 0


class Session(asyncio.Protocol):
    """One staff session on websockets' sans-I/O client protocol, driven straight by asyncio.

    The load generator shares the 2 cores with the system under test, so it must be cheap:
    websockets' asyncio client costs a task switch, a queue and a future per message; here a
    message costs the frame parse and one `orjson.loads` inside `data_received`.
    """

    def __init__(
        self, url: str, tok: str, rec: Recorder, stop: asyncio.Event, room: str | None = None
    ) -> None:
        self.proto = ClientProtocol(parse_uri(url), max_size=None)
        self.tok, self.rec, self.stop, self.room = tok, rec, stop, room
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.seen: set[tuple[str, int]] = set()
        self.open = False  # handshake done: frames are parsed by `_frames`
        self.buf = b""  # an incomplete frame carried to the next `data_received`

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.proto.send_request(self.proto.connect())
        self._flush()

    def _flush(self) -> None:
        assert self.transport is not None
        for data in self.proto.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self.open:
            self._frames(self.buf + data if self.buf else data, now)
            return
        # The opening handshake goes through websockets' protocol; every frame after it is
        # read by `_frames` (the server sends nothing before the auth message below).
        self.proto.receive_data(data)
        for event in self.proto.events_received():
            if isinstance(event, Response) and event.status_code == 101:
                self.proto.send_text(orjson.dumps({"type": "auth", "token": self.tok}))
                self.open = True
        self._flush()

    def _frames(self, buf: bytes, now: float) -> None:
        """Server frames (RFC 6455 5.2: unmasked; this server never fragments a message),
        parsed in place: websockets' generator-based reader cost ~20 us per message here,
        about half of the load generator's CPU, which it takes from the system under test."""
        i, n = 0, len(buf)
        while n - i >= 2:
            b0, size, h = buf[i], buf[i + 1] & 0x7F, 2
            if size == 126:
                if n - i < 4:
                    break
                size, h = (buf[i + 2] << 8) | buf[i + 3], 4
            elif size == 127:
                if n - i < 10:
                    break
                size, h = int.from_bytes(buf[i + 2 : i + 10], "big"), 10
            if n - i - h < size:
                break
            payload = buf[i + h : i + h + size]
            i += h + size
            opcode = b0 & 0x0F
            if not b0 & 0x80:
                raise ValueError("fragmented message: not produced by this server")
            if opcode == 0x1:
                if payload.startswith(QUEUE_CANCELLED):
                    self._cancelled(payload, now)
                else:
                    self._message(orjson.loads(payload), now)
            elif opcode == 0x9:  # ping: the server drops sessions that do not answer
                self.proto.send_pong(payload)
                self._flush()
            elif opcode == 0x8:
                code = str(int.from_bytes(payload[:2], "big")) if len(payload) >= 2 else "none"
                if not self.stop.is_set():
                    self.rec.closed_by_server[code] = self.rec.closed_by_server.get(code, 0) + 1
                self.close()
                return
        self.buf = buf[i:]

    def _cancelled(self, payload: bytes, now: float) -> None:
        """A `queue.cancelled` message, the bulk of every run: its queue id read straight from
        the server's JSON (orjson.loads of the whole message was a third of this process's CPU).
        Anything not laid out as expected is parsed in full instead."""
        at = payload.find(QUEUE_ID)
        end = payload.find(b",", at)
        if at < 0 or end < 0:
            self._message(orjson.loads(payload), now)
            return
        self._arrived("queue.cancelled", int(payload[at + len(QUEUE_ID) : end]), now)

    def _message(self, m: dict[str, Any], now: float) -> None:
        kind: str = m.get("type", "")
        if kind == "ready":
            if self.room is not None:  # a screen of one room (docs/WEBSOCKET.md, subscribe)
                self.proto.send_text(orjson.dumps({"type": "subscribe", "room_ids": [self.room]}))
                self._flush()
            if not self.ready.done():
                self.ready.set_result(True)
            return
        if kind in self.rec.arrivals:
            self._arrived(kind, m["queue_id"], now)

    def _arrived(self, kind: str, queue_id: int, now: float) -> None:
        key = (kind, queue_id)
        if key in self.seen:
            self.rec.duplicates += 1
            return
        self.seen.add(key)
        self.rec.pairs += kind == "queue.cancelled"
        self.rec.arrivals[kind].setdefault(queue_id, []).append(now)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_result(False)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def session(url: str, tok: str, rec: Recorder, gate: asyncio.Semaphore,
                  stop: asyncio.Event, room: str | None = None) -> Session | None:  # fmt: skip
    uri = parse_uri(url)
    loop = asyncio.get_running_loop()
    try:
        async with gate:
            _, sess = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Session(url, tok, rec, stop, room), uri.host, uri.port
                ),
                60,
            )
            ok = await asyncio.wait_for(sess.ready, 60)
    except Exception:
        ok = False
    if not ok:
        rec.failed += 1
        return None
    rec.connected += 1
    return sess


def write_out(path: str, out: dict[str, Any]) -> None:
    Path(path).write_bytes(orjson.dumps(out, option=orjson.OPT_NON_STR_KEYS))


async def main(config: dict[str, Any]) -> None:
    rec = Recorder()
    stop = asyncio.Event()
    gate = asyncio.Semaphore(int(config.get("connect_concurrency", 100)))
    loop = asyncio.get_running_loop()
    tokens: list[str] = config["tokens"]
    first = config.get("first_token")  # e.g. the cancelling user's own session
    rooms: list[str | None] = config.get("rooms") or []  # per session: subscribe to this room
    tasks = [
        asyncio.create_task(
            session(config["url"], first if (i == 0 and first) else tokens[i % len(tokens)],
                    rec, gate, stop, rooms[i] if rooms else None)
        )
        for i in range(int(config["sessions"]))
    ]  # fmt: skip
    sessions = [s for s in await asyncio.gather(*tasks) if s is not None]
    print(f"ready {rec.connected}", flush=True)

    def wait_stdin() -> None:
        while sys.stdin.readline().strip() == "count":
            print(f"count {rec.pairs}", flush=True)
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_stdin, daemon=True).start()
    await stop.wait()
    for sess in sessions:
        sess.close()
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
    """The parent side: `procs` wsclient processes sharing `sessions` sessions. With `rooms`
    (one per session), session i uses `tokens[i]` and subscribes to `rooms[i]`."""

    def __init__(
        self,
        url: str,
        sessions: int,
        procs: int,
        tokens: list[str],
        first: str | None = None,
        rooms: list[str] | None = None,
    ) -> None:
        self.url, self.sessions, self.procs, self.tokens = url, sessions, procs, tokens
        self.first, self.rooms = first, rooms
        assert rooms is None or len(rooms) == len(tokens) == sessions
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
            if self.rooms is not None:  # this process's own slice of the sessions
                at = sum(per[:i])
                cfg["tokens"], cfg["rooms"] = (
                    self.tokens[at : at + count],
                    self.rooms[at : at + count],
                )
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
