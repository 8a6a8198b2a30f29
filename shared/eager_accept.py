"""A uvloop event loop whose plain-TCP servers accept every pending connection in one turn.

libuv, under uvloop, accepts one new connection per turn of the loop and leaves the rest to
the next turns. On a busy server each turn carries the work of every request in flight, so
the last connection of a burst waits as many busy turns as the burst is long before its first
request is even read: a request the API would refuse at once (503 under overload) waits with
the rest. asyncio's own loop accepts the whole queue in one turn but costs more CPU per request.

`EagerAcceptLoop` keeps uvloop for everything and serves plain TCP listeners the way asyncio
does: a reader on the listening socket accepts until the kernel's queue is empty (at most the
backlog per turn) and hands each connection to uvloop's `connect_accepted_socket`. When the
process is out of descriptors or kernel memory it stops accepting for a while instead of
spinning on a listener that stays readable, as asyncio does. TLS listeners are left to uvloop's
own server; nothing here serves TLS. Worker processes sharing one listener
(`CANCEL_API_WORKERS` > 1) each take what is queued when they wake, as on asyncio's loop.

Give it to uvicorn as `loop="shared.eager_accept:EagerAcceptLoop"` (uvicorn uses a custom
loop string as the loop factory itself).
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import uvloop

from shared.logging import get_logger

log = get_logger("shared.eager_accept")

# asyncio's own pause after running out of descriptors or memory while accepting.
ACCEPT_RETRY_DELAY_S = 1.0
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class EagerServer(asyncio.AbstractServer):
    """What `EagerAcceptLoop.create_server` returns: asyncio's `Server` surface (sockets,
    close, wait_closed, serving) over listening sockets the loop watches with a reader."""

    def __init__(
        self,
        loop: EagerAcceptLoop,
        sockets: Sequence[socket.socket],
        protocol_factory: ProtocolFactory,
        backlog: int,
    ) -> None:
        self._loop = loop
        self._sockets: list[socket.socket] = list(sockets)
        self._protocol_factory = protocol_factory
        self._backlog = backlog
        self._serving = False
        self._setups: set[asyncio.Task[Any]] = set()
        self._closed: asyncio.Future[None] = loop.create_future()  # done once closed

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._sockets)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        self._start()

    async def serve_forever(self) -> None:
        self._start()
        try:
            await asyncio.shield(self._closed)
        finally:
            self.close()
            await self.wait_closed()

    def close(self) -> None:
        """Stop listening. Connections already accepted are still handed to their protocol
        (as asyncio's server does); `wait_closed` waits for that hand-over."""
        if self._closed.done():
            return
        self._closed.set_result(None)
        for sock in self._sockets:
            if self._serving:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets = []
        self._serving = False  # a pending retry then watches nothing

    async def wait_closed(self) -> None:
        if self._setups:
            await asyncio.wait(list(self._setups))

    def _start(self) -> None:
        if self._serving or self._closed.done():
            return
        self._serving = True
        for sock in self._sockets:
            sock.setblocking(False)
            sock.listen(self._backlog)
            self._watch(sock)

    def _watch(self, sock: socket.socket) -> None:
        if self._serving:
            self._loop.add_reader(sock.fileno(), self._accept_pending, sock)

    def _accept_pending(self, sock: socket.socket) -> None:
        # Bounded by the backlog, as asyncio bounds it: one turn cannot be taken over by a
        # listener that never empties.
        for _ in range(self._backlog):
            try:
                conn, _address = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise  # the loop's exception handler reports it; the reader stays
                # The listener stays readable while the queue is full: watching it now would
                # spin the loop on failing accepts. Try again after a pause.
                log.error(
                    "accept_paused",
                    error=errno.errorcode.get(exc.errno or 0, str(exc.errno)),
                    retry_in_s=ACCEPT_RETRY_DELAY_S,
                    listener=str(sock.getsockname()),
                )
                self._loop.remove_reader(sock.fileno())
                self._loop.call_later(ACCEPT_RETRY_DELAY_S, self._watch, sock)
                return
            self._hand_over(conn)

    def _hand_over(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        task = self._loop.create_task(
            self._loop.connect_accepted_socket(self._protocol_factory, conn)
        )
        self._setups.add(task)
        task.add_done_callback(lambda done: self._set_up(done, conn))

    def _set_up(self, task: asyncio.Task[Any], conn: socket.socket) -> None:
        self._setups.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            self._loop.call_exception_handler(
                {
                    "message": "Error on transport creation for incoming connection",
                    "exception": exc,
                    "socket": conn,
                }
            )
        if (task.cancelled() or exc is not None) and conn.fileno() != -1:
            # uvloop detaches the socket once its transport owns the descriptor; a socket
            # still attached never reached a transport and is ours to close.
            conn.close()


class EagerAcceptLoop(uvloop.Loop):
    """uvloop, with `create_server` returning an `EagerServer` for plain TCP listeners."""

    async def create_server(  # type: ignore[override]
        self,
        protocol_factory: ProtocolFactory,
        host: str | Sequence[str] | None = None,
        port: int | None = None,
        *,
        family: int = socket.AF_UNSPEC,
        flags: int = socket.AI_PASSIVE,
        sock: socket.socket | None = None,
        backlog: int = 100,
        ssl: Any = None,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        start_serving: bool = True,
        **tls_options: Any,
    ) -> asyncio.AbstractServer:
        if ssl is not None or tls_options:
            # uvloop's typed overloads keep host/port and sock apart; this passes either on.
            uvloop_create_server: Any = super().create_server
            return await uvloop_create_server(  # type: ignore[no-any-return]
                protocol_factory,
                host,
                port,
                family=family,
                flags=flags,
                sock=sock,
                backlog=backlog,
                ssl=ssl,
                reuse_address=reuse_address,
                reuse_port=reuse_port,
                start_serving=start_serving,
                **tls_options,
            )
        if sock is not None:
            if host is not None or port is not None:
                raise ValueError("host/port and sock can not be specified at the same time")
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"A Stream Socket was expected, got {sock!r}")
            sockets = [sock]
        else:
            sockets = await self._bind(host, port, family, flags, reuse_address, reuse_port)
        server = EagerServer(self, sockets, protocol_factory, backlog)
        if start_serving:
            server._start()
        return server

    async def _bind(
        self,
        host: str | Sequence[str] | None,
        port: int | None,
        family: int,
        flags: int,
        reuse_address: bool | None,
        reuse_port: bool | None,
    ) -> list[socket.socket]:
        """One listening socket per address the host resolves to, as asyncio binds them:
        None or "" means every interface (IPv4 and IPv6), IPv6 sockets are IPv6-only."""
        hosts: Iterable[str | None]
        if host is None or host == "":
            hosts = [None]
        elif isinstance(host, str):
            hosts = [host]
        else:
            hosts = host
        infos: set[tuple[Any, ...]] = set()
        for name in hosts:
            infos.update(
                await self.getaddrinfo(
                    name, port, family=family, type=socket.SOCK_STREAM, flags=flags
                )
            )
        if not infos:
            raise OSError(f"getaddrinfo({host!r}) returned an empty list")
        sockets: list[socket.socket] = []
        try:
            for af, socktype, proto, _canonname, address in sorted(infos, key=repr):
                sock = socket.socket(af, socktype, proto)
                sockets.append(sock)
                if reuse_address is not False:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if af == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind(address)
                except OSError as exc:
                    raise OSError(
                        exc.errno,
                        f"error while attempting to bind on address {address!r}: "
                        f"{(exc.strerror or '').lower()}",
                    ) from None
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        return sockets
