"""A session's connection: pre-encoded frames to the transport, one write per batch."""

from __future__ import annotations

import asyncio
import socket

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from shared.logging import get_logger

log = get_logger(__name__)

WRITE_LIMIT = 64 * 1024  # bytes buffered for one socket before its messages wait in a backlog
# The kernel's send buffer per socket. Left to autotuning it grows to megabytes for a client
# that stops reading, hiding a stalled session (and its memory) from the backlog limit.
SEND_BUFFER = 128 * 1024


def limit_send_buffer(conn: ServerConnection) -> None:
    sock = conn.transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)


# How long the hub may offer one Kafka batch's records before it writes what they produced:
# frames of several records leave in one write per socket, and the first record of a long
# batch (a notifier catching up) still waits at most this long for the rest.
FLUSH_BUDGET_S = 0.05


class Flusher:
    """The sockets that took frames since the last flush. The hub flushes them at the end of
    each Kafka batch, and between its records once the batch has used `budget_s`; frames
    written outside the hub (control messages, replays) leave when the current loop step ends."""

    __slots__ = ("budget_s", "dirty")

    def __init__(self, budget_s: float = FLUSH_BUDGET_S) -> None:
        self.budget_s = budget_s
        self.dirty: list[WsSocket] = []

    def mark(self, sock: WsSocket) -> None:
        if not self.dirty:
            asyncio.get_running_loop().call_soon(self.run)
        self.dirty.append(sock)

    def run(self) -> None:
        dirty, self.dirty = self.dirty, []
        for sock in dirty:
            sock.flush()


class WsSocket:
    """A session's view of its connection: pre-encoded frames written straight to the socket
    when it keeps up (like `websockets.broadcast`, minus encoding the frame per socket), and
    the connection's own flow-controlled `send` when it does not.

    Frames taken until the next flush (see `Flusher`: one Kafka batch, a replay's burst) leave
    in one `transport.write`: on loopback and on a LAN the cost of a write is the system call,
    not the bytes, so a notifier that falls behind catches up by writing fewer, larger chunks
    instead of one per frame. Nothing waits for a timer: a frame taken alone leaves as soon as
    its batch (or loop step) ends. Frames still pending count against `WRITE_LIMIT` like the
    transport's buffer, so a session's unsent bytes stay bounded.

    Writing whole frames to the transport is safe here: websockets writes each of its own
    frames in one `transport.write` as well, so frames never interleave. Every path that writes
    through websockets (`send`, `close`) flushes the pending frames first, keeping their order.
    """

    __slots__ = ("conn", "flusher", "pending", "pending_bytes")

    def __init__(self, conn: ServerConnection, flusher: Flusher) -> None:
        self.conn = conn
        self.flusher = flusher
        self.pending: list[bytes] = []
        self.pending_bytes = 0

    def write_now(self, frame: bytes) -> bool:
        conn = self.conn
        if conn.protocol.state is not State.OPEN:
            return True  # closing: dropped, the client resumes from its cursor
        if conn.transport.get_write_buffer_size() + self.pending_bytes > WRITE_LIMIT:
            return False
        if not self.pending:
            self.flusher.mark(self)
        self.pending.append(frame)
        self.pending_bytes += len(frame)
        return True

    def flush(self) -> None:
        """Write what was taken since the last flush, in one chunk (dropped if the connection
        began closing)."""
        if not self.pending:
            return
        frames, self.pending, self.pending_bytes = self.pending, [], 0
        if self.conn.protocol.state is not State.OPEN:
            return  # the client resumes from its cursor
        try:
            self.conn.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
        except Exception as exc:  # a broken socket: websockets sees the loss and ends the session
            log.info("session_write_failed", error=repr(exc))

    async def send(self, data: bytes) -> None:
        self.flush()
        await self.conn.send(data, text=True)

    async def close(self, code: int, reason: str) -> None:
        self.flush()
        await self.conn.close(code, reason)
