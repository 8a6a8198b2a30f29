"""The API's server takes a burst of new connections in one turn of its event loop: a request
the API would refuse at once must not first wait, turn after busy turn, for its connection to
be accepted (under load each turn carries the work of every request in flight)."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import uvicorn

from services.cancel_api.__main__ import server_options
from services.cancel_api.config import CancelApiSettings
from shared.eager_accept import EagerAcceptLoop

BURST = 50
REQUEST = b"POST /antrian_ruangan/batal/1 HTTP/1.1\r\nHost: api\r\n\r\n"
DEADLINE_S = 10.0  # only for a hung server: the assertions count turns, never time


class TurnCountingApp:
    """An ASGI app that counts the turns of the loop serving it (a callback re-armed with
    `call_soon` runs once per turn) and records the turn each request is answered in."""

    def __init__(self) -> None:
        self.turns = 0
        self.answered_at: list[int] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    def _tick(self) -> None:
        self.turns += 1
        assert self.loop is not None
        self.loop.call_soon(self._tick)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.loop = asyncio.get_running_loop()
                    self.loop.call_soon(self._tick)
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.answered_at.append(self.turns)
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_a_burst_of_new_connections_is_answered_within_a_few_turns_of_the_loop():
    settings = CancelApiSettings.model_construct(http_host="127.0.0.1", port=0, workers=1)
    app = TurnCountingApp()
    server = uvicorn.Server(uvicorn.Config(app, **server_options(settings)))
    # Listening before the server starts: a connection made now waits in the kernel's queue.
    listener = socket.create_server(("127.0.0.1", 0), backlog=2 * BURST)
    port = listener.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    socks: list[socket.socket] = []
    gate, blocked = threading.Event(), threading.Event()
    try:
        # One request answered: the server is serving.
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S) as first:
            first.sendall(REQUEST)
            assert _answer(first).startswith(b"HTTP/1.1 503")
        # uvloop's loop (its CPU per request), with servers that accept eagerly.
        assert isinstance(app.loop, EagerAcceptLoop)

        def hold() -> None:
            blocked.set()
            gate.wait(DEADLINE_S)

        # Hold the loop while the burst arrives: the kernel completes every handshake and
        # takes every request, so all of them are pending when the loop's next turn begins.
        app.loop.call_soon_threadsafe(hold)
        assert blocked.wait(DEADLINE_S)
        for _ in range(BURST):
            sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S)
            sock.sendall(REQUEST)
            socks.append(sock)
        first_turn = app.turns
        gate.set()
        answers = [_answer(sock) for sock in socks]
    finally:
        gate.set()
        for sock in socks:
            sock.close()
        server.should_exit = True
        thread.join(DEADLINE_S)
        listener.close()
    assert all(a.startswith(b"HTTP/1.1 503") for a in answers), answers
    burst = app.answered_at[1:]
    assert len(burst) == BURST
    # One connection accepted per turn would take BURST turns for the last one.
    assert max(burst) - first_turn <= 10, (first_turn, burst)
