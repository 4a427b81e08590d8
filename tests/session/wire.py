"""Test peers speaking AMQP over real loopback TCP: a scripted client and a fake broker.

The fake broker exists for what a real RabbitMQ cannot be made to do on demand:
drop mid-frame, stay silent, send garbage, offer a stricter Tune.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any

import attrs
import trio
import trio.testing
from pamqp import base, commands, frame

from amqprouter.protocol import Frame, FrameReader, constants
from amqprouter.routing import Backend, RoutingTable
from amqprouter.server import Server
from amqprouter.server.server import Forwarding
from amqprouter.session import SessionSettings, Timeouts
from tests.conftest import forwarding as forwarding_of_run

WAIT = 5.0  # every test wait is bounded; a hang fails instead of stalling the suite

# Client connections opened during a test; ``router()`` closes them on the way out.
_clients: list[Peer] = []


class Peer:
    """One end of a TCP connection that reads whole frames."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.reader = FrameReader(frame_max=1 << 20)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_method(self, method: base.Frame, channel: int = 0) -> None:
        await self.send(frame.marshal(method, channel))

    async def read_frame(self, timeout: float = WAIT) -> Frame | None:
        """The next frame, or None at end of stream."""
        with trio.fail_after(timeout):
            while (item := self.reader.next_frame()) is None:
                try:
                    data = await self.stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return None
                if not data:
                    return None
                self.reader.feed(data)
            return item

    async def read_method(self, timeout: float = WAIT) -> Any:
        """The next method frame decoded (heartbeats skipped); None at end of stream."""
        while True:
            item = await self.read_frame(timeout)
            if item is None:
                return None
            if item.frame_type == constants.FRAME_METHOD:
                return item.decode()

    async def read_raw(self, size: int, timeout: float = WAIT) -> bytes:
        data = bytearray(self.reader.drain())
        with trio.fail_after(timeout):
            while len(data) < size:
                chunk = await self.stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
        return bytes(data)

    async def read_protocol_header(self, timeout: float = WAIT) -> bytes:
        """The 8-byte protocol header; what follows it (pipelined frames) stays buffered."""
        data = await self.read_raw(8, timeout)
        self.reader.feed(data[8:])
        return data[:8]

    async def at_eof(self, timeout: float = WAIT) -> bool:
        """True once the other side has closed (anything unread is discarded)."""
        with trio.fail_after(timeout):
            while True:
                try:
                    if not await self.stream.receive_some(65536):
                        return True
                except trio.BrokenResourceError:
                    return True

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


def connect_client_side(stream: trio.SocketStream) -> Peer:
    peer = Peer(stream)
    _clients.append(peer)
    return peer


async def client_handshake(
    port: int, vhost: str = "/", *, frame_max: int = 131072, heartbeat: int = 0
) -> Peer:
    """Connect to the router and complete the client side up to Open (not Open-Ok)."""
    peer = connect_client_side(await trio.open_tcp_stream("127.0.0.1", port))
    await peer.send(constants.PROTOCOL_HEADER)
    assert isinstance(await peer.read_method(), commands.Connection.Start)
    await peer.send_method(
        commands.Connection.StartOk(
            client_properties={"connection_name": "wire-test"},
            mechanism="PLAIN",
            response="\0guest\0guest",
        )
    )
    assert isinstance(await peer.read_method(), commands.Connection.Tune)
    await peer.send_method(
        commands.Connection.TuneOk(channel_max=2047, frame_max=frame_max, heartbeat=heartbeat)
    )
    await peer.send_method(commands.Connection.Open(virtual_host=vhost))
    return peer


async def open_client(port: int, vhost: str = "/") -> Peer:
    peer = await client_handshake(port, vhost)
    assert isinstance(await peer.read_method(), commands.Connection.OpenOk)
    return peer


@attrs.define
class FakeBroker:
    """Accepts connections and hands each, as a Peer, to ``behaviour``."""

    port: int = 0
    accepted: list[Peer] = attrs.Factory(list)
    start_oks: list[commands.Connection.StartOk] = attrs.Factory(list)


async def broker_handshake(
    peer: Peer, broker: FakeBroker, tune: commands.Connection.Tune | None = None
) -> None:
    """Play RabbitMQ's side of the handshake (the router pipelines its side)."""
    assert await peer.read_protocol_header() == constants.PROTOCOL_HEADER
    await peer.send_method(
        commands.Connection.Start(server_properties={"product": "fake"}, mechanisms="PLAIN")
    )
    start_ok = await peer.read_method()
    assert isinstance(start_ok, commands.Connection.StartOk)
    broker.start_oks.append(start_ok)
    await peer.send_method(
        tune or commands.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=60)
    )
    assert isinstance(await peer.read_method(), commands.Connection.TuneOk)
    assert isinstance(await peer.read_method(), commands.Connection.Open)
    await peer.send_method(commands.Connection.OpenOk())


Behaviour = Callable[[Peer, FakeBroker], Awaitable[None]]


async def open_and_idle(peer: Peer, broker: FakeBroker) -> None:
    """A broker behaviour: complete the handshake, then stay connected and silent."""
    await broker_handshake(peer, broker)
    await trio.sleep_forever()


@asynccontextmanager
async def fake_broker(behaviour: Behaviour) -> AsyncIterator[FakeBroker]:
    broker = FakeBroker()

    async def handle(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        broker.accepted.append(peer)
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await behaviour(peer, broker)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        broker.port = listeners[0].socket.getsockname()[1]
        yield broker
        nursery.cancel_scope.cancel()


FAST = Timeouts(client_handshake=1.0, connect=1.0, broker_handshake=1.0, close=0.5)


@asynccontextmanager
async def router(
    broker_port: int | None,
    *,
    timeouts: Timeouts = FAST,
    routing: RoutingTable | None = None,
    clock: Callable[[], float] = time.monotonic,
    primed: int = 0,
    forwarding: Forwarding | None = None,
) -> AsyncIterator[tuple[Server, int]]:
    """An in-process router in simple mode in front of ``broker_port`` (None: no route,
    or the ``routing`` given). ``clock=trio.current_time`` puts session supervision on
    trio's clock (for tests on a MockClock). ``primed``: primed broker connections per
    backend, off by default since a scripted fake broker expects its connections to be
    sessions (tests/server/test_primed.py turns them on). ``forwarding``: the data plane,
    by default the run's (``pytest --forwarding``, AMQPROUTER_FORWARDING), the pumps on a
    MockClock."""
    if forwarding is None:
        # The engine's thread runs in real time, unseen by a MockClock: an autojump
        # clock would leap past every wait for it. Mock-clock tests use the pumps.
        on_mock_clock = isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
        forwarding = "tasks" if on_mock_clock else forwarding_of_run()
    routing = routing or RoutingTable()
    if broker_port is not None:
        routing = RoutingTable.single(Backend("fake", "none", "127.0.0.1", broker_port))
    server = Server(
        SessionSettings(timeouts=timeouts),
        routing,
        clock=clock,
        primed_per_backend=primed,
        forwarding=forwarding,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        port = await server.listen(0, "127.0.0.1")
        try:
            yield server, port
        finally:
            while _clients:
                await _clients.pop().aclose()
            nursery.cancel_scope.cancel()


async def wait_no_sessions(server: Server, timeout: float = WAIT) -> None:
    with trio.fail_after(timeout):
        while server.sessions:
            await trio.sleep(0.01)
