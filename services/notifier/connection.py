"""A session's connection: pre-encoded frames straight to the transport while it keeps up."""

from __future__ import annotations

import socket

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

WRITE_LIMIT = 64 * 1024  # bytes buffered for one socket before its messages wait in a backlog
# The kernel's send buffer per socket. Left to autotuning it grows to megabytes for a client
# that stops reading, hiding a stalled session (and its memory) from the backlog limit.
SEND_BUFFER = 128 * 1024


def limit_send_buffer(conn: ServerConnection) -> None:
    sock = conn.transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)


class WsSocket:
    """A session's view of its connection: a pre-encoded frame written straight to the socket
    when it keeps up (like `websockets.broadcast`, minus encoding the frame per socket), and
    the connection's own flow-controlled `send` when it does not.

    Writing whole frames to the transport is safe here: websockets writes each of its own
    frames in one `transport.write` as well, so frames never interleave.
    """

    __slots__ = ("conn",)

    def __init__(self, conn: ServerConnection) -> None:
        self.conn = conn

    def write_now(self, frame: bytes) -> bool:
        conn = self.conn
        if conn.protocol.state is not State.OPEN:
            return True  # closing: dropped, the client resumes from its cursor
        if conn.transport.get_write_buffer_size() > WRITE_LIMIT:
            return False
        conn.transport.write(frame)
        return True

    async def send(self, data: bytes) -> None:
        await self.conn.send(data, text=True)

    async def close(self, code: int, reason: str) -> None:
        await self.conn.close(code, reason)
