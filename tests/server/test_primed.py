"""Primed broker connections (server/primed.py).

The pool is driven on trio's virtual clock with primed "connections" that are one end
of a socketpair (the test holds the other, playing the broker: closing it or writing
to it is what a broker that gave up or misbehaved does). Then the real thing: sessions
through an in-process router to the machine's RabbitMQ take primed connections, and a
fake broker shows what the broker sees of a primed connection.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.lowlevel
import trio.testing
from pamqp import commands
from prometheus_client.parser import text_string_to_metric_families

from amqprouter.net.transport import PlainTransport, Transport
from amqprouter.observe.prometheus import metrics_text
from amqprouter.observe.stats import StatsCollector
from amqprouter.protocol import constants
from amqprouter.routing import Backend, RoutingTable
from amqprouter.server.primed import BUCKET, MAX_AGE, RETRY_AFTER, TICK, PoolStats, PrimedPool
from tests.brokers import SystemBroker
from tests.session.wire import (
    FakeBroker,
    Peer,
    client_handshake,
    fake_broker,
    open_client,
    router,
)

B1 = Backend("b1", "dc", "127.0.0.1", 5672)
B2 = Backend("b2", "dc", "127.0.0.1", 5673)


class Primer:
    """A ``Prime`` that hands out socketpair ends and keeps the broker's ends."""

    def __init__(self) -> None:
        self.brokers: list[socket.socket] = []
        self.fail: BaseException | None = None
        self.calls = 0

    async def __call__(self, backend: Backend) -> Transport:
        self.calls += 1
        await trio.sleep(0.001)  # a real priming takes about a millisecond
        if self.fail is not None:
            raise self.fail
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        self.brokers.append(theirs)
        return PlainTransport(ours)

    def close_all(self) -> None:
        for sock in self.brokers:
            sock.close()


@pytest.fixture
def primer() -> Iterator[Primer]:
    made = Primer()
    yield made
    made.close_all()


@asynccontextmanager
async def running(pool: PrimedPool) -> AsyncIterator[PrimedPool]:
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        yield pool
        nursery.cancel_scope.cancel()


def make_pool(primer: Primer, usable: set[Backend] | None = None, size: int = 4) -> PrimedPool:
    allowed = {B1, B2} if usable is None else usable
    return PrimedPool(primer, lambda backend: backend in allowed, max_per_backend=size)


def took(pool: PrimedPool, backend: Backend = B1) -> bool:
    """Take a primed connection (closing it: the test only needs to know there was one)."""
    transport = pool.take(backend)
    if transport is None:
        return False
    transport.close()
    return True


async def ask_twice(pool: PrimedPool) -> None:
    """Two sessions for B1 in separate slices: demand enough for a pool of one."""
    took(pool)
    await trio.sleep(BUCKET)
    took(pool)


async def one_ready(pool: PrimedPool) -> None:
    """Demand enough for a pool of one, and that one primed."""
    await ask_twice(pool)
    await settle()
    assert pool.ready() == 1


async def settle() -> None:
    await trio.sleep(TICK * 2)


async def test_no_pool_until_a_backend_is_in_demand(
    autojump_clock: trio.testing.MockClock, primer: Primer
) -> None:
    async with running(make_pool(primer)) as pool:
        await settle()
        assert primer.calls == 0, "nothing is primed for a backend nobody asked for"
        assert pool.take(B1) is None  # one session: below MIN_DEMAND
        await settle()
        assert primer.calls == 0
        assert pool.take(B1) is None
        await settle()
        assert pool.ready() == 1, "two sessions within the window: a pool of one"
        assert took(pool)
        assert (pool.stats.used, pool.stats.missed) == (1, 2)
        await settle()
        assert pool.ready() == 1, "what was taken is replaced"


async def test_pool_size_follows_the_rate_and_is_bounded(
    autojump_clock: trio.testing.MockClock, primer: Primer
) -> None:
    async with running(make_pool(primer, size=4)) as pool:
        for _ in range(1500):  # 100 in each 0.1 s slice: the bound, 4, holds
            took(pool)
            await trio.sleep(0.001)
        await settle()
        assert pool.ready() == 4
        assert all(took(pool) for _ in range(4))


async def test_a_burst_is_met_by_a_pool_its_size(
    autojump_clock: trio.testing.MockClock, primer: Primer
) -> None:
    async with running(make_pool(primer, size=8)) as pool:
        for _ in range(5):  # five sessions at once
            took(pool)
        await settle()
        assert pool.ready() == 5
        assert all(took(pool) for _ in range(5)), "the next burst like it finds them ready"


async def test_unused_connections_age_out_and_idle_backends_are_forgotten(
    autojump_clock: trio.testing.MockClock, primer: Primer
) -> None:
    async with running(make_pool(primer)) as pool:
        await one_ready(pool)
        first = primer.brokers[0]
        await trio.sleep(MAX_AGE + TICK)
        # The first one was retired before RabbitMQ's handshake timeout; its
        # replacement was retired too once the demand had gone.
        assert first.recv(1) == b"", "a retired connection is closed"
        await trio.sleep(MAX_AGE)
        assert pool.ready() == 0
        assert pool.stats.opened == pool.stats.discarded
        calls = primer.calls
        await trio.sleep(MAX_AGE)
        assert primer.calls == calls, "no demand, no priming"


@pytest.mark.parametrize("broker_did", ["closed", "wrote"])
async def test_a_dead_primed_connection_is_never_handed_out(
    autojump_clock: trio.testing.MockClock, primer: Primer, broker_did: str
) -> None:
    async with running(make_pool(primer, size=1)) as pool:
        await one_ready(pool)
        broker_end = primer.brokers[-1]
        if broker_did == "closed":
            broker_end.close()
        else:  # anything after Start (a Close for its handshake timeout, say)
            broker_end.send(b"\x01\x00\x00")
        assert pool.take(B1) is None, "found dead: the session connects the ordinary way"
        assert pool.stats.discarded == 1
        assert pool.stats.used == 0


async def test_an_unusable_backend_loses_its_pool(
    autojump_clock: trio.testing.MockClock, primer: Primer
) -> None:
    usable = {B1}
    async with running(make_pool(primer, usable)) as pool:
        await one_ready(pool)
        usable.clear()  # disabled, drained, deleted, changed or down
        pool.wake()
        await trio.lowlevel.checkpoint()
        await trio.lowlevel.checkpoint()
        assert pool.ready() == 0
        assert primer.brokers[0].recv(1) == b""
        calls = primer.calls
        assert pool.take(B1) is None
        await settle()
        assert primer.calls == calls, "an unusable backend is not primed"


async def test_taking_from_an_unusable_backend_discards_at_once(primer: Primer) -> None:
    """Between a change and the pool's next look, ``take`` itself checks."""
    usable = {B1}
    pool = make_pool(primer, usable)
    async with running(pool):
        await ask_twice(pool)
        with trio.fail_after(2):
            while not pool.ready():
                await trio.sleep(0.01)
        usable.clear()
        assert pool.take(B1) is None
        assert pool.ready() == 0


async def test_a_failing_backend_is_left_alone_for_a_while(
    autojump_clock: trio.testing.MockClock, primer: Primer
) -> None:
    primer.fail = OSError("connection refused")
    async with running(make_pool(primer)) as pool:
        await ask_twice(pool)
        await settle()
        assert (primer.calls, pool.stats.failed) == (1, 1)
        took(pool)
        await trio.sleep(RETRY_AFTER / 2)
        assert primer.calls == 1, "no retry before RETRY_AFTER"
        primer.fail = None
        await ask_twice(pool)
        await trio.sleep(RETRY_AFTER)
        assert pool.ready() >= 1


async def test_clear_drops_ready_and_in_flight_connections(
    autojump_clock: trio.testing.MockClock, primer: Primer
) -> None:
    async with running(make_pool(primer)) as pool:
        await one_ready(pool)
        pool.clear()
        assert pool.ready() == 0
        await trio.sleep(0.0005)  # a refill is in flight: primed under the old settings
        pool.clear()
        await trio.sleep(0.01)
        assert all(sock.recv(1) == b"" for sock in primer.brokers[:2])


async def test_send_proxy_backends_and_a_zero_size_are_never_primed(
    autojump_clock: trio.testing.MockClock, primer: Primer
) -> None:
    proxied = Backend("p", "dc", "127.0.0.1", 5672, send_proxy=2)
    async with running(make_pool(primer, {proxied})) as pool:
        for _ in range(5):
            assert not took(pool, proxied)
        await settle()
    off = make_pool(primer, size=0)
    assert not off.enabled
    assert off.take(B1) is None
    assert primer.calls == 0


async def test_the_pool_closes_what_it_holds_when_stopped(
    autojump_clock: trio.testing.MockClock, primer: Primer
) -> None:
    async with running(make_pool(primer)) as pool:
        await one_ready(pool)
    assert primer.brokers[0].recv(1) == b""


# -- with a broker ----------------------------------------------------------------------


class Greeter:
    """A fake broker that knows which of its connections are greeted and waiting."""

    def __init__(self) -> None:
        self.waiting: list[Peer] = []  # sent Start, no StartOk yet
        #: Close the next connection to send a StartOk, unanswered (then clear this).
        self.drop_next = False

    async def __call__(self, peer: Peer, broker: FakeBroker) -> None:
        assert await peer.read_protocol_header() == constants.PROTOCOL_HEADER
        await peer.send_method(commands.Connection.Start(mechanisms="PLAIN"))
        self.waiting.append(peer)
        start_ok = await peer.read_method()
        self.waiting.remove(peer)
        if start_ok is None:
            return  # closed unused: retired, discarded, or dropped by the test
        if self.drop_next:
            self.drop_next = False
            await peer.stream.aclose()
            return
        assert isinstance(start_ok, commands.Connection.StartOk)
        broker.start_oks.append(start_ok)
        await peer.send_method(commands.Connection.Tune(2047, 131072, 60))
        assert isinstance(await peer.read_method(), commands.Connection.TuneOk)
        assert isinstance(await peer.read_method(), commands.Connection.Open)
        await peer.send_method(commands.Connection.OpenOk())
        await trio.sleep_forever()


async def primed_ready(pool: PrimedPool, count: int = 1) -> None:
    with trio.fail_after(2):
        while pool.ready() < count:
            await trio.sleep(0.01)


async def test_a_primed_connection_is_greeted_then_replayed_from_tune() -> None:
    """What a broker sees: header, (Start), then nothing until a client's Open routes
    there, then StartOk, TuneOk and Open at once, as from an unprimed session."""
    greeter = Greeter()
    async with fake_broker(greeter) as broker, router(broker.port, primed=2) as (server, port):
        for _ in range(2):  # demand: two sessions connect the ordinary way
            await (await open_client(port)).stream.aclose()
        await primed_ready(server.primed)
        assert greeter.waiting, "a primed connection waits, greeted, on the broker"
        started = len(broker.start_oks)
        peer = await client_handshake(port)
        assert isinstance(await peer.read_method(), commands.Connection.OpenOk)
        assert server.primed.stats.used == 1
        assert len(broker.start_oks) == started + 1
        assert broker.start_oks[-1].client_properties["connection_name"] == "wire-test"


async def test_a_primed_connection_the_broker_dropped_is_not_handed_out() -> None:
    greeter = Greeter()
    async with fake_broker(greeter) as broker, router(broker.port, primed=1) as (server, port):
        for _ in range(2):
            await (await open_client(port)).stream.aclose()
        await primed_ready(server.primed)
        for peer in list(greeter.waiting):  # the broker restarted, say
            await peer.stream.aclose()
        await trio.sleep(0.05)
        discarded = server.primed.stats.discarded
        peer = await client_handshake(port)
        assert isinstance(await peer.read_method(), commands.Connection.OpenOk)
        assert server.primed.stats.discarded == discarded + 1
        assert server.primed.stats.used == 0


async def test_a_primed_connection_closed_at_the_replay_is_replaced_unseen() -> None:
    """The broker drops a primed connection after the pool's check, as the replay
    arrives: the client still gets Open-Ok, over a fresh connection."""
    greeter = Greeter()
    async with fake_broker(greeter) as broker, router(broker.port, primed=1) as (server, port):
        for _ in range(2):
            await (await open_client(port)).stream.aclose()
        await primed_ready(server.primed)
        accepted, started = len(broker.accepted), len(broker.start_oks)
        greeter.drop_next = True
        peer = await client_handshake(port)
        assert isinstance(await peer.read_method(), commands.Connection.OpenOk)
        assert server.primed.stats.used == 1  # the one dropped
        assert not greeter.drop_next
        assert len(broker.start_oks) == started + 1  # answered once, on a new connection
        assert len(broker.accepted) >= accepted + 1


async def test_sessions_to_a_real_rabbitmq_use_primed_connections(
    system_broker: SystemBroker,
) -> None:
    async with router(None, routing=RoutingTable.single(B1), primed=4) as (server, port):
        for _ in range(20):
            peer = await open_client(port)
            await peer.send_method(commands.Channel.Open(), 1)
            assert isinstance(await peer.read_method(), commands.Channel.OpenOk)
            await peer.send_method(commands.Connection.Close(200, "bye", 0, 0))
            assert isinstance(await peer.read_method(), commands.Connection.CloseOk)
            await peer.stream.aclose()
        stats = server.primed.stats
        assert stats.used >= 15, stats
        assert stats.failed == 0, stats


def test_the_pools_figures_on_the_metrics_page() -> None:
    stats = PoolStats(opened=12, used=9, missed=3, discarded=2, failed=1)
    text = metrics_text(StatsCollector({}, 1.0), listeners=1, primed=(stats, 1))
    families = {family.name: family for family in text_string_to_metric_families(text)}
    outcomes = {
        s.labels["outcome"]: s.value for s in families["amqprouter_primed_connections"].samples
    }
    assert outcomes == {"opened": 12, "used": 9, "discarded": 2, "failed": 1}
    assert families["amqprouter_primed_misses"].samples[0].value == 3
    assert families["amqprouter_primed_connections_ready"].samples[0].value == 1
    off = metrics_text(StatsCollector({}, 1.0), listeners=1)
    assert "amqprouter_primed" not in off, "no pool (--primed-connections 0): no family"
