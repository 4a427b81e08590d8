"""A session with no sockets: its client and its broker are ``MemoryTransport`` peers.

``in_memory_session`` builds a ``Session`` the way the server does (one
``SessionContext``), over the router's end of a memory pair, with the context's
``open_connection`` hook handing the session the router's end of another pair per
broker connection; the far end goes to a scripted broker behaviour written with
pamqp. Everything runs in one nursery, so a test on trio's mock clock
(``autojump_clock``) jumps over every timeout the session waits out.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

import attrs
import trio
from pamqp import commands

from amqprouter.net.memory_transport import MemoryTransport, memory_transport_pair
from amqprouter.net.resolver import Resolver
from amqprouter.net.sockets import PeerGone
from amqprouter.net.transport import Transport, recv_some
from amqprouter.routing import Backend, RoutingTable
from amqprouter.session import Session, SessionSettings, Timeouts
from amqprouter.session.context import SessionContext
from amqprouter.session.watch import Watchdog
from tests.session.frame_peer import FramePeer, play_broker_handshake, play_client_handshake

WAIT = 30.0  # every wait is bounded (on the mock clock: instant when it fires)
#: The client's address as the session sees it, and the listener's.
CLIENT = ("10.0.0.1", 40000)
LISTENER = ("127.0.0.1", 5673)
BACKEND = Backend("fake", "none", "127.0.0.1", 5672)


class MemoryPeer(FramePeer):
    """One far end of a memory pair that reads and writes whole AMQP frames."""

    wait = WAIT

    def __init__(self, transport: MemoryTransport) -> None:
        super().__init__()
        self.transport = transport

    async def send(self, data: bytes) -> None:
        await self.transport.send_all(data)

    async def _receive(self) -> bytes:
        try:
            return await recv_some(self.transport)
        except PeerGone:
            return b""


Behaviour = Callable[[MemoryPeer], Awaitable[None]]


async def broker_handshake(peer: MemoryPeer, *, heartbeat: int = 0) -> commands.Connection.StartOk:
    """Play RabbitMQ's side of the handshake (the router pipelines its side)."""
    tune = commands.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=heartbeat)
    return await play_broker_handshake(peer, tune)


async def client_handshake(peer: MemoryPeer, *, heartbeat: int = 0, vhost: str = "/") -> None:
    """The client's side up to its Open (not the Open-Ok)."""
    await play_client_handshake(peer, name="memory-test", vhost=vhost, heartbeat=heartbeat)


@attrs.define
class InMemory:
    """One session under test, its client's end, and the brokers it connected to."""

    session: Session
    client: MemoryPeer
    brokers: list[MemoryPeer]
    ended: trio.Event


@asynccontextmanager
async def in_memory_session(
    broker: Behaviour,
    *,
    timeouts: Timeouts | None = None,
    max_buffer: int | None = None,
    client: tuple[str, int] = CLIENT,
) -> AsyncIterator[InMemory]:
    """A session over memory transports in front of one scripted ``broker``; each
    connection the session opens runs ``broker`` on its far end. Supervised by a
    watchdog on trio's clock. ``max_buffer``: the client's pair holds at most this
    many unread bytes per direction (a client that stops reading blocks the router)."""
    brokers: list[MemoryPeer] = []
    watchdog = Watchdog(trio.current_time)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watchdog.run)

        async def serve(peer: MemoryPeer) -> None:
            with suppress(PeerGone):  # the session closed it: the test judges what it saw
                await broker(peer)

        async def open_connection(
            family: socket.AddressFamily, address: tuple[str, int]
        ) -> Transport:
            router_end, broker_end = memory_transport_pair(
                ("127.0.0.1", 50000 + len(brokers)), address
            )
            peer = MemoryPeer(broker_end)
            brokers.append(peer)
            nursery.start_soon(serve, peer)
            return router_end

        context = SessionContext(
            settings=SessionSettings(timeouts=timeouts or Timeouts()),
            routing=lambda: RoutingTable.single(BACKEND),
            resolver=Resolver(),
            watchdog=watchdog,
            open_connection=open_connection,
        )
        client_end, router_end = memory_transport_pair(client, LISTENER, max_buffer=max_buffer)
        session = Session(router_end, context, listen_port=LISTENER[1])
        under_test = InMemory(session, MemoryPeer(client_end), brokers, trio.Event())

        async def run() -> None:
            await session.run()
            under_test.ended.set()

        nursery.start_soon(run)
        yield under_test
        nursery.cancel_scope.cancel()


async def ended(under_test: InMemory, timeout: float = WAIT) -> None:
    with trio.fail_after(timeout):
        await under_test.ended.wait()
