"""ws_fanout: 5,000 websocket sessions of one clinic and room, 100 cancels spread over 10 s.
Delivery latency over all (session, message) pairs, messages lost, notifier RSS. Anchor: one raw
`websockets` broadcast loop (`python -m bench.ws_fanout raw`, a process of its own) sending the
same message count to the same number of sessions, in the same run."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    Row,
    cdf,
    figure,
    log,
    now_iso,
    percentiles,
    save_figure,
    token,
    write_result,
)
from bench.stack import (
    Stack,
    cancel,
    http_client,
    seed_tickets,
)
from bench.wsclient import Fleet


def hwm_mb(pid: int) -> float:
    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
        if ln.startswith("VmHWM:"):
            return round(int(ln.split()[1]) / 1024, 1)
    return 0.0


def analyse(sent: dict[int, float], arrivals: dict[int, list[float]], connected: int) -> dict:
    lat, spread, pairs = [], [], 0
    for qid, t in sent.items():
        times = arrivals.get(qid, [])
        pairs += len(times)
        lat.extend(x - t for x in times)
        if times:
            first = min(times)
            spread.extend(x - first for x in times)
    return {
        "pairs_expected": len(sent) * connected,
        "pairs_received": pairs,
        "lost": len(sent) * connected - pairs,
        "latency_ms": percentiles(lat),
        "spread_after_first_ms": percentiles(spread),
        "_lat": lat,
    }


async def raw_anchor(sessions: int, procs: int, count: int, seconds: float) -> dict[str, Any]:
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.ws_fanout", "raw",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert server.stdout is not None and server.stdin is not None
    port = int((await server.stdout.readline()).decode())
    fleet = Fleet(f"ws://127.0.0.1:{port}/ws", sessions, procs, ["raw"])
    try:
        connected = await fleet.start()
        server.stdin.write(f"{count} {seconds}\n".encode())
        await server.stdin.drain()
        sent = {int(k): v for k, v in orjson.loads(await server.stdout.readline()).items()}
        rss = float((await server.stdout.readline()).decode())
        await fleet.settle(count * connected, limit_s=60)
        got = await fleet.stop()
    finally:
        fleet.kill()
        server.stdin.close()
        if server.returncode is None:
            server.kill()
        await server.wait()
    return {"connected": connected, "server_rss_mb": rss, "client_cpu_s": round(got["cpu_s"], 2),
            **analyse(sent, got["arrivals"]["queue.cancelled"], connected)}  # fmt: skip


async def notifier_run(
    stack: Stack, sessions: int, procs: int, count: int, seconds: float
) -> dict[str, Any]:
    ids = await seed_tickets(stack.dsn, count)
    fleet = Fleet(stack.ws_url, sessions, procs, [token("u-viewer", ["cancel antrean"])])
    t_connect = time.monotonic()
    try:
        return await _notifier_run(stack, fleet, ids, t_connect, count, seconds)
    finally:
        fleet.kill()


async def _notifier_run(
    stack: Stack, fleet: Fleet, ids: list[int], t_connect: float, count: int, seconds: float
) -> dict[str, Any]:
    connected = await fleet.start(limit_s=300)
    connect_s = time.monotonic() - t_connect
    rss_idle = stack.services["notifier"].rss_mb()
    await asyncio.sleep(1.5)  # resume window after `ready`
    cpu0 = stack.cpu_snapshot()
    sent: dict[int, float] = {}
    tok = token()
    async with http_client(32) as client:
        t0 = time.monotonic()

        async def one(i: int, qid: int) -> None:
            await asyncio.sleep(max(0.0, t0 + i * seconds / count - time.monotonic()))
            sent[qid] = time.monotonic()
            await cancel(client, stack.api_url, qid, tok)

        await asyncio.gather(*(one(i, q) for i, q in enumerate(ids)))
    await fleet.settle(count * connected, limit_s=60)
    cpu = {k: round(v - cpu0[k], 2) for k, v in stack.cpu_snapshot().items()}
    rss = stack.services["notifier"].rss_mb()
    got = await fleet.stop()
    return {
        "connected": connected,
        "connect_s": round(connect_s, 1),
        "notifier_rss_mb_idle_sessions": rss_idle,
        "notifier_rss_mb_after": rss,
        "notifier_rss_mb_peak": hwm_mb(stack.services["notifier"].pid),
        "closed_by_server": got["closed_by_server"],
        "duplicates": got["duplicates"],
        "cpu_s_during_cancels": cpu,
        "client_cpu_s": round(got["cpu_s"], 2),
        **analyse(sent, got["arrivals"]["queue.cancelled"], connected),
    }


async def run(quick: bool) -> list[Row]:
    sessions = int(os.environ.get("BENCH_WS_SESSIONS", "1000" if quick else "5000"))
    count, seconds = (50, 5.0) if quick else (100, 10.0)
    procs = 2
    stack = await Stack("ws").create()
    started = now_iso()
    try:
        stack.start_api()
        stack.start_notifier()
        note = await notifier_run(stack, sessions, procs, count, seconds)
        log(f"ws_fanout notifier: {note['latency_ms']} lost {note['lost']}")
        usage = stack.usage(count)
    finally:
        await stack.destroy()
    raw = await raw_anchor(sessions, procs, count, seconds)
    log(f"ws_fanout raw loop: {raw['latency_ms']} lost {raw['lost']}")
    fig, (a1, a2) = figure(
        quick, "ws_fanout", title=f"ws_fanout ({sessions} sessions, {count} msgs)"
    )
    cdf(a1, [x * 1000 for x in note.pop("_lat")], "notifier (from cancel sent)")
    cdf(a1, [x * 1000 for x in raw.pop("_lat")], "raw broadcast loop (from broadcast)")
    a1.set_xscale("log")
    a1.set_xlabel("delivery latency (ms)")
    a1.legend(fontsize=8)
    a2.bar(["notifier idle", "notifier after", "notifier peak", "raw loop"],
           [note["notifier_rss_mb_idle_sessions"], note["notifier_rss_mb_after"],
            note["notifier_rss_mb_peak"], raw["server_rss_mb"]])  # fmt: skip
    a2.axhline(300, color="red", ls="--")
    a2.set_ylabel("RSS MB")
    save_figure(fig, quick, "ws_fanout")
    write_result(
        "ws_fanout",
        quick,
        {"inputs": {"sessions": sessions, "messages": count, "seconds": seconds,
                    "client_procs": procs},
         "started": started, "finished": now_iso(), "notifier": note, "raw_loop": raw,
         "services": usage},
    )  # fmt: skip
    lat, rl = note["latency_ms"], raw["latency_ms"]
    p99 = lat.get("p99", 1e9)
    peak = note["notifier_rss_mb_peak"]
    return [
        Row("ws_fanout", f"{note['connected']} sessions: delivery p50/p99/max (ms)",
            f"{lat.get('p50')} / {p99} / {lat.get('max')}", "p99 <= 250", p99 <= 250),
        Row("ws_fanout", "messages lost", str(note["lost"]), "0", note["lost"] == 0),
        Row("ws_fanout", "notifier RSS after / peak (MB)",
            f"{note['notifier_rss_mb_after']} / {peak}", "<= 300", peak <= 300),
        Row("ws_fanout", "raw broadcast loop: p50/p99/max (ms); lost",
            f"{rl.get('p50')} / {rl.get('p99')} / {rl.get('max')}; {raw['lost']}"),
    ]  # fmt: skip


async def _raw_server() -> None:
    """Accept sessions (auth -> ready), then broadcast `count` messages over `seconds`."""
    import websockets

    conns: set[Any] = set()

    async def handler(ws: Any) -> None:
        await ws.recv()
        await ws.send('{"type":"ready"}')
        conns.add(ws)
        try:
            await ws.wait_closed()
        finally:
            conns.discard(ws)

    async with websockets.serve(handler, "127.0.0.1", 0, compression=None, max_queue=None) as srv:
        port = next(iter(srv.sockets)).getsockname()[1]
        print(port, flush=True)
        loop = asyncio.get_running_loop()
        line = await loop.run_in_executor(None, sys.stdin.readline)
        count, seconds = int(line.split()[0]), float(line.split()[1])
        sent: dict[int, float] = {}
        t0 = time.monotonic()
        for i in range(count):
            await asyncio.sleep(max(0.0, t0 + i * seconds / count - time.monotonic()))
            sent[i] = time.monotonic()
            text = orjson.dumps({"type": "queue.cancelled", "queue_id": i, "event_id": str(i),
                                 "room_id": "POLI-UMUM", "ticket_number": f"A-{i}",
                                 "payer": "UMUM", "cancelled_by": {"user_id": "u", "name": "n"},
                                 "cursor": "x" * 80}).decode()  # fmt: skip
            websockets.broadcast(conns, text)
        print(orjson.dumps(sent, option=orjson.OPT_NON_STR_KEYS).decode(), flush=True)
        print(hwm_mb(os.getpid()), flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)


if __name__ == "__main__" and sys.argv[1:] == ["raw"]:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_raw_server())
