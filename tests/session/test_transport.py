"""The transport seam: the session forwards over whatever transport the hooks hand it.

``Trickle`` stands in for TLS where it matters to the pumps: it reads ahead off the
socket and hands its buffer out a few bytes per ``recv``, so bytes are ``pending()``
while the socket itself has nothing. A pump that waited on the socket then would hang.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import structlog.testing
import trio
from pamqp import body, commands, frame, header

from amqprouter.net.sockets import READ_SIZE, PeerGone
from amqprouter.net.transport import PlainTransport, Transport
from amqprouter.routing import Backend, RoutingTable
from amqprouter.server import Server
from amqprouter.session import SessionSettings
from amqprouter.session.connect import StartClient
from tests.session.wire import (
    FAST,
    FakeBroker,
    Peer,
    broker_handshake,
    client_handshake,
    connect_client_side,
    fake_broker,
    open_and_idle,
    open_client,
    wait_no_sessions,
)


class Trickle:
    """A read-ahead transport over a plain one: ``recv`` returns at most ``piece`` bytes."""

    def __init__(self, inner: Transport, piece: int = 5) -> None:
        self.inner = inner
        self.piece = piece
        self.buffer = bytearray()
        self.reads = 0
        # An attribute, as the interface has it (PlainTransport binds socket.recv there).
        self.recv: Callable[[int], bytes] = self._recv

    def _recv(self, size: int) -> bytes:
        self.reads += 1
        if not self.buffer:
            data = self.inner.recv(READ_SIZE)  # BlockingIOError, OSError, b"" pass through
            if not data:
                return b""
            self.buffer += data
        out = bytes(self.buffer[: min(size, self.piece)])
        del self.buffer[: len(out)]
        return out

    async def wait_readable(self) -> None:
        # Deliberately only the socket: minding pending() is the pump's job.
        await self.inner.wait_readable()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def send_pieces(self, pieces: list[bytes | memoryview]) -> None:
        await self.inner.send_pieces(pieces)

    def pending(self) -> int:
        return len(self.buffer)

    def close(self) -> None:
        self.inner.close()

    def peer_name(self) -> tuple[str, int]:
        return self.inner.peer_name()

    def local_name(self) -> tuple[str, int]:
        return self.inner.local_name()

    def peer_subject(self) -> str | None:
        return None

    def tls_version(self) -> str | None:
        return None

    def raw_socket(self) -> socket.socket | None:
        return None  # it reads ahead: the socket's bytes are not the stream's


@asynccontextmanager
async def hooked_router(
    backends: list[Backend], start: StartClient | None, wrap: object = None
) -> AsyncIterator[tuple[Server, int]]:
    routing = RoutingTable.single(backends[0])
    server = Server(SessionSettings(timeouts=FAST), routing)
    server.wrap_backend = wrap  # type: ignore[assignment]
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        port = await server.listen(0, "127.0.0.1", start=start)
        try:
            yield server, port
        finally:
            nursery.cancel_scope.cancel()


def publish(payload: bytes) -> bytes:
    return (
        frame.marshal(commands.Basic.Publish(exchange="", routing_key="q"), 1)
        + frame.marshal(header.ContentHeader(body_size=len(payload)), 1)
        + frame.marshal(body.ContentBody(payload), 1)
    )


async def test_both_sides_forward_over_read_ahead_transports() -> None:
    """Pending bytes are read before the pump waits on the socket, in both directions."""
    message = publish(b"x" * 3000)
    trickles: list[Trickle] = []
    wrapped: list[Backend] = []

    async def start(transport: Transport) -> Transport:
        trickles.append(Trickle(transport))
        return trickles[-1]

    async def wrap(backend: Backend, transport: Transport, client: tuple[str, int]) -> Transport:
        wrapped.append(backend)
        trickles.append(Trickle(transport))
        return trickles[-1]

    async def echo(peer: Peer, broker: FakeBroker) -> None:
        await broker_handshake(peer, broker)
        await peer.send(await peer.read_raw(len(message)))
        await trio.sleep_forever()

    async with fake_broker(echo) as broker:
        backend = Backend("fake", "none", "127.0.0.1", broker.port)
        async with hooked_router([backend], start, wrap) as (server, port):
            client = await open_client(port)
            await client.send(message)
            assert await client.read_raw(len(message)) == message
            assert wrapped == [backend]
            # The handshakes and both pumps read through the hooks' transports.
            assert all(t.reads > len(message) // 5 for t in trickles), [t.reads for t in trickles]
            await client.aclose()
            await wait_no_sessions(server)


async def test_a_failing_start_hook_closes_the_client_quietly() -> None:
    async def start(transport: Transport) -> Transport:
        raise PeerGone("TLS handshake failed: bad certificate")

    async with fake_broker(open_and_idle) as broker:
        backend = Backend("fake", "none", "127.0.0.1", broker.port)
        async with hooked_router([backend], start) as (server, port):
            with structlog.testing.capture_logs() as logs:
                client = connect_client_side(await trio.open_tcp_stream("127.0.0.1", port))
                assert await client.at_eof()
                await wait_no_sessions(server)
            assert [e for e in logs if e["event"] == "client transport failed to start"]
            assert broker.accepted == [], "no broker is chosen for a client that never started"


async def test_a_start_hook_that_hangs_is_bounded_by_the_client_handshake_timeout() -> None:
    async def start(transport: Transport) -> Transport:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with fake_broker(open_and_idle) as broker:
        backend = Backend("fake", "none", "127.0.0.1", broker.port)
        async with hooked_router([backend], start) as (server, port):
            client = connect_client_side(await trio.open_tcp_stream("127.0.0.1", port))
            started = trio.current_time()
            assert await client.at_eof()
            assert trio.current_time() - started < FAST.client_handshake + 1.0
            await wait_no_sessions(server)


async def test_a_failing_backend_wrap_is_a_connect_failure() -> None:
    seen: list[PlainTransport] = []

    async def wrap(backend: Backend, transport: Transport, client: tuple[str, int]) -> Transport:
        assert isinstance(transport, PlainTransport)
        seen.append(transport)
        raise OSError("certificate verify failed")

    async def until_closed(peer: Peer, broker: FakeBroker) -> None:
        assert await peer.at_eof()

    async with fake_broker(until_closed) as broker:
        backend = Backend("fake", "none", "127.0.0.1", broker.port)
        async with hooked_router([backend], None, wrap) as (server, port):
            client = await client_handshake(port)
            close = await client.read_method()
            assert isinstance(close, commands.Connection.Close)
            assert close.reply_code == 320
            assert "no broker reachable for vhost /" in close.reply_text
            assert len(seen) == 1
            assert seen[0].sock.fileno() == -1, "the wrapped-over socket is closed"
            health = server.health.registry.get("fake")
            assert health is not None and health.down
            assert "certificate verify failed" in health.reason
            await wait_no_sessions(server)
