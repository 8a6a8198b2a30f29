"""A session's socket over a real websocket on loopback: coalesced writes, order, limits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson
import pytest
import websockets
from websockets.asyncio.server import ServerConnection, serve

from services.notifier.connection import WRITE_LIMIT, Flusher, WsSocket
from services.notifier.hub import Hub
from services.notifier.messages import Audience
from services.notifier.metrics import NotifierMetrics
from services.notifier.session import Outgoing, Session
from tests.unit.test_notifier_messages import cancelled, record


class CountingTransport:
    """The connection's real transport, counting the writes that reach it."""

    def __init__(self, inner) -> None:
        self.inner, self.writes = inner, 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.inner.write(data)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


@contextlib.asynccontextmanager
async def pair() -> AsyncIterator[tuple[ServerConnection, CountingTransport, object]]:
    """A server-side connection (its transport counted) and the client talking to it."""
    accepted: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()

    async def handler(conn: ServerConnection) -> None:
        accepted.set_result(conn)
        await conn.wait_closed()

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with websockets.connect(f"ws://127.0.0.1:{port}", compression=None) as client:
            conn = await asyncio.wait_for(accepted, 5)
            counted = CountingTransport(conn.transport)
            conn.transport = counted
            yield conn, counted, client


def frame(n: int, pad: int = 0) -> bytes:
    return Outgoing.of(orjson.dumps({"n": n, "pad": "x" * pad})).frame


async def numbers(client, count: int, key: str = "n") -> list[int]:
    return [orjson.loads(await asyncio.wait_for(client.recv(), 5))[key] for _ in range(count)]


async def test_frames_taken_in_one_step_leave_in_one_write_and_in_order():
    async with pair() as (conn, counted, client):
        sock = WsSocket(conn, Flusher())
        assert all(sock.write_now(frame(n)) for n in range(50))
        assert counted.writes == 0  # nothing is written before the step ends
        assert await numbers(client, 50) == list(range(50))
        assert counted.writes == 1


async def test_frames_of_separate_steps_are_not_held_back():
    async with pair() as (conn, counted, client):
        sock = WsSocket(conn, Flusher())
        for n in range(3):
            assert sock.write_now(frame(n))
            assert await numbers(client, 1) == [n]  # arrives without a later frame to push it
        assert counted.writes == 3


async def test_pending_frames_count_against_the_write_limit():
    size = 8 * 1024
    async with pair() as (conn, _counted, client):
        sock = WsSocket(conn, Flusher())
        taken = 0
        while sock.write_now(frame(taken, size)):
            taken += 1
        assert sock.pending_bytes > WRITE_LIMIT
        assert taken == WRITE_LIMIT // len(frame(0, size)) + 1
        assert await numbers(client, taken) == list(range(taken))


async def test_close_writes_the_pending_frames_before_the_close_frame():
    async with pair() as (conn, _counted, client):
        sock = WsSocket(conn, Flusher())
        assert sock.write_now(frame(1))
        await sock.close(4408, "too far behind")
        assert await numbers(client, 1) == [1]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(client.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408


async def test_a_burst_past_the_limit_reaches_the_client_whole_and_in_order():
    """What the write limit turns away waits in the session's backlog, sent after the pending."""
    async with pair() as (conn, _counted, client):
        session = Session(
            WsSocket(conn, Flusher()), Audience("u-1", "K1", False), 1000, NotifierMetrics()
        )
        for n in range(200):
            session.send_control({"type": "pong", "n": n, "pad": "x" * 1024})
        assert session.backlog  # the limit was reached within the step
        assert await numbers(client, 200) == list(range(200))


def live_hub(conn: ServerConnection, flusher: Flusher) -> Hub:
    """A hub with one live session of clinic K1 on `conn`."""
    metrics = NotifierMetrics()
    hub = Hub(metrics, None, history_per_partition=100, replay_concurrency=1, flusher=flusher)  # type: ignore[arg-type]
    session = Session(WsSocket(conn, flusher), Audience("u-1", "K1", False), 1000, metrics)
    session.release()  # no resume: live at once
    hub.add(session)
    return hub


async def test_a_kafka_batch_leaves_in_one_write_per_session_when_the_hub_ends_it():
    async with pair() as (conn, counted, client):
        hub = live_hub(conn, Flusher())
        hub.ingest([record(n, cancelled(qid=n)) for n in range(20)])
        assert counted.writes == 1  # written by the hub itself, before this step ends
        assert await numbers(client, 20, "queue_id") == list(range(20))


async def test_a_batch_past_the_flush_budget_is_written_as_it_goes():
    """A notifier catching up does not hold the first record back for the whole batch."""
    async with pair() as (conn, counted, client):
        hub = live_hub(conn, Flusher(budget_s=0.0))
        hub.ingest([record(n, cancelled(qid=n)) for n in range(5)])
        assert counted.writes == 5
        assert await numbers(client, 5, "queue_id") == list(range(5))
