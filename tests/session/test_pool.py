"""The pool's links on in-memory transports and trio's mock clock: who waits for a
handshake under way, the limit of links per key, the idle timeout, heartbeats to the
broker, and what every client of a link is told when the broker blocks, closes or
goes silent."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from pamqp import commands, frame

from amqprouter.net.memory_transport import MemoryTransport, memory_transport_pair
from amqprouter.protocol import Frame, FrameReader, TuneParams
from amqprouter.routing import Backend
from amqprouter.session.pool import (
    HEARTBEAT_FRAME,
    BrokerLink,
    Pool,
    PooledClient,
    PoolEnded,
    PoolLimits,
    Turn,
    pool_key,
)

BACKEND = Backend("fake", "none", "127.0.0.1", 5672)
KEY = pool_key("fake", "/", "PLAIN", b"\x00guest\x00guest", 131072)


def test_the_key_names_the_user_and_never_holds_the_password() -> None:
    assert KEY.user == "guest"
    assert "guest\x00guest" not in KEY.credentials
    assert pool_key("fake", "/", "PLAIN", b"\x00guest\x00wrong", 131072) != KEY


async def start_link(
    pool: Pool, nursery: trio.Nursery, heartbeat: int = 0
) -> tuple[BrokerLink, MemoryTransport]:
    await nursery.start(pool.run)
    ours, broker = memory_transport_pair()
    link = pool.add(KEY, BACKEND, ours, TuneParams(2047, 131072, heartbeat), b"")
    return link, broker


def client_pair(client_id: int) -> tuple[PooledClient, MemoryTransport]:
    ours, theirs = memory_transport_pair()
    return PooledClient(client_id, ours, trio.CancelScope()), theirs


async def read_frame(peer: MemoryTransport, reader: FrameReader | None = None) -> Frame:
    """The next frame ``peer`` got (a ``reader`` kept across calls holds what one read
    brought beyond it: the link writes what one broker read came to at once)."""
    reader = reader or FrameReader(1 << 20)
    while True:
        got = reader.next_frame()
        if got is not None:
            return got
        await peer.wait_readable()
        reader.feed(peer.recv(1 << 16))


async def test_clients_of_a_key_wait_for_the_handshake_under_way() -> None:
    pool = Pool(PoolLimits(max_connections=1))
    assert await pool.wait_turn(KEY) is Turn.OPEN
    outcomes: list[object] = []

    async def waiter() -> None:
        outcomes.append(await pool.wait_turn(KEY))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert outcomes == []
        # The handshake failed (a 403): one waiter opens next, the other waits for it.
        pool.settled(KEY)
        await trio.testing.wait_all_tasks_blocked()
        assert outcomes == [Turn.OPEN]
        pool.settled(KEY)
    assert outcomes == [Turn.OPEN, Turn.OPEN]


async def test_a_key_at_its_limit_of_full_links_is_full(nursery: trio.Nursery) -> None:
    pool = Pool(PoolLimits(max_connections=1, max_channels=1))
    link, _broker = await start_link(pool, nursery)
    client, _ = client_pair(1)
    link.attach(client)
    assert await pool.wait_turn(KEY) is link  # a channel slot is still free
    link.mux.channels.allocate()  # its one channel in use
    assert await pool.wait_turn(KEY) is Turn.FULL


async def test_an_idle_link_closes_after_the_idle_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    pool = Pool(PoolLimits(idle_timeout=5))
    link, broker = await start_link(pool, nursery)
    client, _ = client_pair(1)
    link.attach(client)
    await trio.sleep(60)  # a client on it: kept however long
    assert not link.closed
    began = trio.current_time()
    await link.detach(1)
    close = await read_frame(broker)  # the link's Connection.Close, 5 s later
    assert close.method_id == (10, 50)
    assert trio.current_time() - began == pytest.approx(5)
    await broker.send_all(frame.marshal(commands.Connection.CloseOk(), 0))
    await trio.testing.wait_all_tasks_blocked()
    assert link.closed and pool.find(KEY) is None and pool.stats().links == 0


async def test_the_broker_is_heartbeaten_and_a_silent_one_ends_every_client(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    pool = Pool()
    link, broker = await start_link(pool, nursery, heartbeat=10)
    clients = [client_pair(n) for n in (1, 2)]
    for client, _ in clients:
        link.attach(client)
    first = await read_frame(broker)
    assert first.raw == HEARTBEAT_FRAME
    await trio.sleep(30)  # the broker says nothing for over two intervals
    assert link.closed
    for client, _ in clients:
        assert client.scope.cancel_called
        assert isinstance(client.ended, PoolEnded) and client.ended.reply_code == 320


async def test_blocked_and_the_brokers_close_reach_every_client(nursery: trio.Nursery) -> None:
    pool = Pool()
    link, broker = await start_link(pool, nursery)
    clients = [client_pair(n) for n in (1, 2)]
    for client, _ in clients:
        link.attach(client)
    blocked = frame.marshal(commands.Connection.Blocked("low on memory"), 0)
    await broker.send_all(blocked)
    for _, peer in clients:
        assert (await read_frame(peer)).raw == blocked
    close = commands.Connection.Close(320, "CONNECTION_FORCED - maintenance", 0, 0)
    await broker.send_all(frame.marshal(close, 0))
    assert (await read_frame(broker)).method_id == (10, 51)  # the link's Close-Ok
    await trio.testing.wait_all_tasks_blocked()
    for client, _ in clients:
        assert client.ended is not None
        assert (client.ended.reply_code, client.ended.reply_text) == (
            320,
            "CONNECTION_FORCED - maintenance",
        )


async def open_channels(
    link: BrokerLink, broker: MemoryTransport, clients: list[PooledClient]
) -> dict[int, int]:
    """Open channel 1 of each client (the broker answering); their broker channels."""
    channels = {}
    for client in clients:
        opening = Frame(1, 1, frame.marshal(commands.Channel.Open(), 1))
        await link.from_client(client.id, link.mux.client_frame(client.id, opening))
        sent = await read_frame(broker)
        channels[client.id] = sent.channel
        await broker.send_all(frame.marshal(commands.Channel.OpenOk(), sent.channel))
    return channels


async def test_a_client_that_stops_reading_is_cut_at_once_and_the_others_go_on(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The link never waits on one client: past its bound of unwritten bytes a client
    that stopped reading is cut (its socket, the write having stopped inside a frame),
    and the other client's frame read in the same read of the broker arrives at once."""
    pool = Pool()
    link, broker = await start_link(pool, nursery)
    ours, stuck_peer = memory_transport_pair(max_buffer=1024)
    stuck = PooledClient(1, ours, trio.CancelScope(), limit=4096)
    fine, fine_peer = client_pair(2)
    for client in (stuck, fine):
        link.attach(client)
    channels = await open_channels(link, broker, [stuck, fine])
    fine_reader = FrameReader(1 << 20)
    assert (await read_frame(fine_peer, fine_reader)).method_id == (20, 11)
    assert stuck_peer.recv(1 << 16)  # its Open-Ok; from now on it reads nothing
    began = trio.current_time()
    big = frame.marshal(commands.Basic.Deliver("ctag", 1, False, "", "x" * 200), 1)
    ack = frame.marshal(commands.Basic.Ack(delivery_tag=1), channels[2])
    for _ in range(40):  # about 10 KiB for a reader that takes 1 KiB, bound 4 KiB
        await broker.send_all(rewrite(big, channels[1]) + ack)
        await trio.testing.wait_all_tasks_blocked()  # one read of the broker each
    for _ in range(40):
        got = await read_frame(fine_peer, fine_reader)
        assert got.method_id == (60, 80) and got.channel == 1
    assert trio.current_time() == began  # nobody waited on the stuck client
    assert stuck.stuck and stuck.mid_frame and ours.closed
    assert stuck.scope.cancel_called and stuck.ended is None
    assert not link.closed


async def test_a_client_cut_at_a_frame_boundary_is_told_320_by_its_session() -> None:
    """``offer`` past the bound with nothing written inside a frame: the client is
    marked stuck and its scope cancelled, its transport left open for the 320 that
    its session writes (pooling.py)."""
    ours, _peer = memory_transport_pair()
    client = PooledClient(1, ours, trio.CancelScope(), limit=100)  # no writer: all waits
    client.offer(b"x" * 60)
    assert not client.stuck and client.queued == 60
    client.offer(b"y" * 60)
    assert client.stuck and not client.mid_frame and client.scope.cancel_called
    assert not ours.closed and client.queued == 120
    client.offer(b"z")  # nothing more is taken
    assert client.queued == 120


async def test_a_slow_reader_under_its_bound_gets_everything_in_order(
    nursery: trio.Nursery,
) -> None:
    pool = Pool()
    link, broker = await start_link(pool, nursery)
    ours, peer = memory_transport_pair(max_buffer=512)
    client = PooledClient(1, ours, trio.CancelScope(), limit=1 << 16)
    link.attach(client)
    channels = await open_channels(link, broker, [client])
    sent = [
        frame.marshal(commands.Basic.Deliver("ctag", n, False, "", "x" * 100), 1)
        for n in range(1, 51)
    ]
    await broker.send_all(b"".join(rewrite(raw, channels[1]) for raw in sent))
    await trio.testing.wait_all_tasks_blocked()
    assert client.queued > 0  # the reader has read nothing yet: it waits, bounded
    reader = FrameReader(1 << 20)
    assert (await read_frame(peer, reader)).method_id == (20, 11)
    for n in range(1, 51):
        got = await read_frame(peer, reader)
        assert got.raw == raw_on(sent[n - 1], 1)
    assert await client.drained() and not client.stuck


def rewrite(raw: bytes, channel: int) -> bytes:
    return raw[:1] + channel.to_bytes(2, "big") + raw[3:]


raw_on = rewrite


async def test_a_client_forgotten_before_serving_leaves_the_link_idle(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    pool = Pool(PoolLimits(idle_timeout=5))
    link, broker = await start_link(pool, nursery)
    client, _ = client_pair(1)
    link.attach(client)
    link.forget(1)
    link.forget(1)  # twice (serving detached it already): nothing more
    assert pool.stats().clients == 0
    assert (await read_frame(broker)).method_id == (10, 50)  # idle: closed after 5 s
