"""Test peers speaking AMQP over real loopback TCP: a scripted client and a fake broker.

The fake broker exists for what a real RabbitMQ cannot be made to do on demand:
drop mid-frame, stay silent, send garbage, offer a stricter Tune.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial

import attrs
import trio
import trio.testing
from pamqp import commands

from amqprouter.routing import Backend, RoutingTable
from amqprouter.server import Server
from amqprouter.server.server import Forwarding
from amqprouter.session import SessionSettings, Timeouts
from tests.conftest import forwarding as forwarding_of_run
from tests.session.frame_peer import WAIT as WAIT  # the tests import it from here
from tests.session.frame_peer import FramePeer, play_broker_handshake, play_client_handshake

# Client connections opened during a test; ``router()`` closes them on the way out.
_clients: list[Peer] = []


class Peer(FramePeer):
    """One end of a TCP connection that reads whole frames."""

    def __init__(self, stream: trio.SocketStream) -> None:
        super().__init__()
        self.stream = stream

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _receive(self) -> bytes:
        try:
            return await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""

    async def read_protocol_header(self, timeout: float | None = None) -> bytes:
        """The 8-byte protocol header; what follows it (pipelined frames) stays buffered."""
        return await self.read_raw(8, timeout)

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
    await play_client_handshake(
        peer, name="wire-test", vhost=vhost, frame_max=frame_max, heartbeat=heartbeat
    )
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
    tune = tune or commands.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=60)
    broker.start_oks.append(await play_broker_handshake(peer, tune))


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
