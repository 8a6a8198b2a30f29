"""`EagerAcceptLoop`'s servers: what they do when accepting fails, when they close with
connections still being set up, and which addresses they listen on."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from shared.eager_accept import EagerAcceptLoop, EagerServer
from tests.fixtures.infra import wait_until

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
DEADLINE_S = 10.0  # only for a hung server: nothing here asserts a duration


class Answer(asyncio.Protocol):
    """Answers one request and closes; `on_made` runs when a connection reaches it, `lost`
    is done once its connection is closed (libuv has closed the descriptor by then)."""

    def __init__(self, on_made: Callable[[], None] | None = None) -> None:
        self.on_made = on_made
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport
        self.data = b""
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if self.on_made is not None:
            self.on_made()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.data += data
        if b"\r\n\r\n" in self.data and self.transport is not None:
            self.transport.write(ANSWER)
            self.transport.close()


def recording(
    made: list[Answer], on_made: Callable[[], None] | None = None
) -> Callable[[], Answer]:
    """A protocol factory that keeps every protocol it makes in `made`."""

    def factory() -> Answer:
        made.append(Answer(on_made))
        return made[-1]

    return factory


class FlakyListener(socket.socket):
    """A listening socket whose accept fails with `failing` (an errno) while it is set."""

    failing: int | None = None
    attempts = 0

    def accept(self) -> tuple[socket.socket, Any]:
        self.attempts += 1
        if self.failing is not None:
            raise OSError(self.failing, os.strerror(self.failing))
        return super().accept()


def run(main: Callable[[asyncio.AbstractEventLoop], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=EagerAcceptLoop) as runner:
        loop = runner.get_loop()
        runner.run(asyncio.wait_for(main(loop), DEADLINE_S))


def pending_request(address: tuple[Any, ...], family: int = socket.AF_INET) -> socket.socket:
    """A client whose connection and request wait in the listener's queue (the kernel
    completes the handshake without the server's loop)."""
    client = socket.socket(family, socket.SOCK_STREAM)
    client.connect(address)
    client.sendall(REQUEST)
    client.setblocking(False)
    return client


async def answer_of(loop: asyncio.AbstractEventLoop, client: socket.socket) -> bytes:
    data = b""
    while chunk := await loop.sock_recv(client, 4096):
        data += chunk
    client.close()
    return data


async def turns(n: int) -> None:
    """Let the loop go round n times (each round polls for I/O)."""
    for _ in range(n):
        await asyncio.sleep(0)


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def warmed_up(loop: asyncio.AbstractEventLoop) -> None:
    """Serve one connection: uvloop opens a descriptor of its own, for good, the first time a
    connection goes through it, which a count of open descriptors must not take for a leak."""
    made: list[Answer] = []
    server = await loop.create_server(recording(made), "127.0.0.1", 0)
    assert await answer_of(loop, pending_request(server.sockets[0].getsockname())) == ANSWER
    server.close()
    await server.wait_closed()
    await made[0].lost


def flaky_listener() -> FlakyListener:
    listener = FlakyListener(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener


def test_out_of_descriptors_pauses_accepting_instead_of_spinning_then_serves_the_connection():
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        listener = flaky_listener()
        listener.failing = errno.EMFILE
        client = pending_request(listener.getsockname())
        server = await loop.create_server(Answer, sock=listener)
        # A listener with a queued connection stays readable: a server that kept watching it
        # would try (and fail) to accept on every one of these rounds.
        await turns(200)
        attempts_while_failing = listener.attempts
        listener.failing = None
        assert await answer_of(loop, client) == ANSWER  # accepted after the pause
        assert attempts_while_failing == 1
        assert server.is_serving()
        server.close()
        await server.wait_closed()

    run(main)


def test_another_accept_error_is_reported_and_the_server_keeps_serving():
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        reported: list[dict[str, Any]] = []
        listener = flaky_listener()

        def handler(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            reported.append(context)
            listener.failing = None

        loop.set_exception_handler(handler)
        listener.failing = errno.EPERM
        client = pending_request(listener.getsockname())
        server = await loop.create_server(Answer, sock=listener)
        assert await answer_of(loop, client) == ANSWER
        assert [type(c["exception"]) for c in reported] == [PermissionError]
        server.close()
        await server.wait_closed()

    run(main)


def test_closing_with_connections_still_being_set_up_hands_every_accepted_one_over():
    burst = 20

    async def main(loop: asyncio.AbstractEventLoop) -> None:
        await warmed_up(loop)
        before = open_descriptors()
        listener = socket.create_server(("127.0.0.1", 0), backlog=2 * burst)
        address = listener.getsockname()
        clients = [pending_request(address) for _ in range(burst)]
        made: list[Answer] = []
        server: asyncio.AbstractServer | None = None

        def first_made() -> None:
            # The whole burst was accepted in one turn; the others are still on their way to
            # their protocol when the server closes.
            assert server is not None
            if server.is_serving():
                server.close()

        server = await loop.create_server(recording(made, first_made), sock=listener)
        answers = [await answer_of(loop, c) for c in clients]
        await server.wait_closed()
        assert answers == [ANSWER] * burst
        assert len(made) == burst
        assert not server.is_serving() and server.sockets == ()
        assert listener.fileno() == -1
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=DEADLINE_S)
        await asyncio.gather(*(answer.lost for answer in made))
        assert open_descriptors() == before

    run(main)


def test_serve_forever_serves_until_cancelled_then_closes():
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        server = await loop.create_server(Answer, "127.0.0.1", 0, start_serving=False)
        address = server.sockets[0].getsockname()
        assert not server.is_serving()
        forever = asyncio.ensure_future(server.serve_forever())
        await wait_until(server.is_serving, timeout=DEADLINE_S, interval=0, what="serving")
        assert await answer_of(loop, pending_request(address)) == ANSWER
        assert server.is_serving()
        forever.cancel()
        with pytest.raises(asyncio.CancelledError):
            await forever
        assert not server.is_serving() and server.sockets == ()

    run(main)


def test_a_host_name_gets_one_listener_per_address_ipv6_only_on_ipv6():
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        server = await loop.create_server(Answer, ["127.0.0.1", "::1"], 0)
        assert isinstance(server, EagerServer)
        by_family = {s.family: s for s in server.sockets}
        assert set(by_family) == {socket.AF_INET, socket.AF_INET6}
        v6 = by_family[socket.AF_INET6]
        assert v6.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        for family, sock in by_family.items():
            client = pending_request(sock.getsockname(), family)
            assert await answer_of(loop, client) == ANSWER
        server.close()
        await server.wait_closed()

    run(main)


def test_no_host_listens_on_every_interface_of_each_family():
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        server = await loop.create_server(Answer, None, 0)
        expected = {
            info[4][0]
            for info in socket.getaddrinfo(
                None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        }
        assert {s.getsockname()[0] for s in server.sockets} == expected
        server.close()

    run(main)


def test_a_port_in_use_is_refused_with_the_address_and_no_socket_left_open():
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        await warmed_up(loop)
        taken = socket.create_server(("127.0.0.1", 0))
        before = open_descriptors()
        with pytest.raises(OSError) as refused:
            await loop.create_server(Answer, "127.0.0.1", taken.getsockname()[1])
        assert refused.value.errno == errno.EADDRINUSE
        assert "error while attempting to bind on address ('127.0.0.1'" in str(refused.value)
        assert open_descriptors() == before
        taken.close()

    run(main)


def test_a_socket_with_a_host_or_a_datagram_socket_is_refused():
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            with pytest.raises(ValueError, match="host/port and sock"):
                await loop.create_server(Answer, "127.0.0.1", sock=sock)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            with pytest.raises(ValueError, match="Stream Socket"):
                await loop.create_server(Answer, sock=udp)

    run(main)


def test_a_tls_listener_is_left_to_uvloops_own_server():
    async def main(loop: asyncio.AbstractEventLoop) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server = await loop.create_server(Answer, "127.0.0.1", 0, ssl=context)
        assert not isinstance(server, EagerServer)
        server.close()
        await server.wait_closed()

    run(main)
