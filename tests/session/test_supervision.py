"""Supervision of forwarding sessions: heartbeats watched, writes bounded.

On trio's virtual clock (``autojump_clock``), with the router's watchdog on the same
clock (``router(clock=trio.current_time)``): the deadlines are asserted to the
virtual tenth of a second, and a test that waits a minute takes milliseconds. The
peers are real loopback TCP sockets; the broker is a fake that can fall silent, stop
reading or block the connection on demand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

import attrs
import pytest
import trio
import trio.testing
from pamqp import commands, frame

from amqprouter.observe.stats import Removal, removal
from amqprouter.protocol import constants
from amqprouter.server import Server
from amqprouter.session import End, Session, State, Timeouts
from amqprouter.session.pause import HEARTBEAT_FRAME
from amqprouter.session.settings import WRITE_TIMEOUT_WITHOUT_HEARTBEAT
from tests.session.test_pause import body_frame
from tests.session.wire import (
    FakeBroker,
    Peer,
    broker_handshake,
    client_handshake,
    fake_broker,
    router,
    wait_no_sessions,
)

SLOW = Timeouts(
    client_handshake=1000.0, connect=1000.0, broker_handshake=1000.0, close=0.5, disconnect=5.0
)
WRITE = 5.0  # the write timeout of the write tests
FLOOD = body_frame(0, 128 * 1024 - 8) * 8  # 1 MiB of whole frames


@attrs.define
class Broker:
    """The fake broker's side of the one session: its peer and what it does."""

    heartbeat_every: float | None = None  # None: silent
    reading: bool = True
    blocked: bool = False
    answer_close: bool = True  # False while a test's flood may hold the broker's send side
    peer: Peer | None = None
    opened: trio.Event = attrs.Factory(trio.Event)
    received: list[bytes] = attrs.Factory(list)
    may_read: trio.Event = attrs.Factory(trio.Event)
    eof: trio.Event = attrs.Factory(trio.Event)

    async def behaviour(self, peer: Peer, broker: FakeBroker) -> None:
        await broker_handshake(peer, broker)
        self.peer = peer
        if self.blocked:
            await peer.send_method(commands.Connection.Blocked(reason="low on memory"))
        self.opened.set()
        async with trio.open_nursery() as nursery:
            if self.heartbeat_every is not None:
                nursery.start_soon(beat, peer, self.heartbeat_every)
            if not self.reading:
                await self.may_read.wait()
            while (item := await peer.read_frame(timeout=10_000)) is not None:
                self.received.append(item.raw)
                if item.method_id == constants.CONNECTION_CLOSE and self.answer_close:
                    await peer.send_method(commands.Connection.CloseOk())
            self.eof.set()
            nursery.cancel_scope.cancel()

    def closes(self) -> list[commands.Connection.Close]:
        methods = [frame.unmarshal(raw)[2] for raw in self.received if raw[:1] == b"\x01"]
        return [m for m in methods if isinstance(m, commands.Connection.Close)]


async def beat(peer: Peer, every: float) -> None:
    while True:
        await trio.sleep(every)
        await peer.send(HEARTBEAT_FRAME)


@asynccontextmanager
async def supervised(
    broker: Broker, heartbeat: int, timeouts: Timeouts = SLOW
) -> AsyncIterator[tuple[Server, Session, Peer]]:
    """One forwarding session, its client having negotiated ``heartbeat``."""
    async with (
        fake_broker(broker.behaviour) as fake,
        router(fake.port, timeouts=timeouts, clock=trio.current_time) as (server, port),
    ):
        client = await client_handshake(port, heartbeat=heartbeat)
        assert isinstance(await client.read_method(), commands.Connection.OpenOk)
        await broker.opened.wait()
        [session] = server.sessions.values()
        yield server, session, client


async def read_close(client: Peer) -> commands.Connection.Close:
    """The next method, which must be a Close (heartbeats and deliveries skipped)."""
    while True:
        item = await client.read_frame(timeout=10_000)
        assert item is not None, "end of stream before a Connection.Close"
        if item.channel == 0 and item.method_id == constants.CONNECTION_CLOSE:
            close = item.decode()
            assert isinstance(close, commands.Connection.Close)
            return close


async def in_background(nursery: trio.Nursery, job: Callable[[], Awaitable[object]]) -> None:
    async def run() -> None:
        with trio.move_on_after(10_000):
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await job()

    nursery.start_soon(run)


# --------------------------------------------------------------------------- #
# heartbeats
# --------------------------------------------------------------------------- #


async def test_a_silent_broker_is_dead_after_two_heartbeat_intervals(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker()  # opens, then says nothing, but keeps its TCP connection
    async with supervised(broker, heartbeat=2) as (server, session, client):
        opened = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(beat, client, 1.0)  # the client is alive
            close = await read_close(client)
            assert round(trio.current_time() - opened, 1) == 4.0
            nursery.cancel_scope.cancel()
        assert close.reply_code == 320
        assert close.reply_text.startswith("CONNECTION_FORCED - broker fake (127.0.0.1:")
        assert close.reply_text.endswith("sent nothing for 4s (heartbeat 2s)")
        await client.send_method(commands.Connection.CloseOk())
        assert await client.at_eof()
        with trio.fail_after(1):
            await broker.eof.wait()  # the broker side is closed too
        assert broker.closes() == []  # cut: a frozen broker would not answer a Close
        await wait_no_sessions(server)
    assert session.ended is End.BROKER_SILENT


async def test_heartbeats_both_ways_keep_a_session_alive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(heartbeat_every=1.0)
    async with supervised(broker, heartbeat=2) as (_server, session, client):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(beat, client, 1.0)
            await trio.sleep(600)
            nursery.cancel_scope.cancel()
        assert session.state is State.OPEN
        assert len(broker.received) >= 590  # the client's heartbeats, end to end
        frames = 0
        while frames < 500:  # and the broker's reached the client
            item = await client.read_frame()
            assert item is not None and item.raw == HEARTBEAT_FRAME
            frames += 1


async def test_without_heartbeats_an_idle_session_is_not_judged(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    looks: list[float] = []
    check = Session.watch_check

    def counted(self: Session, now: float) -> float | None:
        looks.append(now)
        return check(self, now)

    monkeypatch.setattr(Session, "watch_check", counted)
    broker = Broker()
    async with supervised(broker, heartbeat=0) as (server, session, _client):
        await trio.sleep(10 * WRITE_TIMEOUT_WITHOUT_HEARTBEAT)
        assert session.state is State.OPEN
        assert len(server.watchdog) == 1
    # Looked at once per write timeout (a write may start and stick), no more.
    assert 9 <= len(looks) <= 11, looks


async def test_an_idle_session_with_heartbeats_is_looked_at_once_per_silence_bound(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    looks: list[float] = []
    check = Session.watch_check

    def counted(self: Session, now: float) -> float | None:
        looks.append(now)
        return check(self, now)

    monkeypatch.setattr(Session, "watch_check", counted)
    broker = Broker(heartbeat_every=5.0)  # RabbitMQ's pace for heartbeat 10
    async with supervised(broker, heartbeat=10) as (_server, session, client):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(beat, client, 5.0)
            await trio.sleep(200)
            nursery.cancel_scope.cancel()
        assert session.state is State.OPEN
    # The next look is 20 s after the last heartbeat seen: about every 15-20 s.
    assert 9 <= len(looks) <= 15, looks


async def test_a_silent_client_gets_its_broker_side_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(heartbeat_every=1.0)
    async with supervised(broker, heartbeat=3) as (server, session, client):
        opened = trio.current_time()
        close = await read_close(client)
        assert round(trio.current_time() - opened, 1) == 6.0
        reason = f"client 127.0.0.1:{client.stream.socket.getsockname()[1]} sent nothing for 6s"
        assert close.reply_code == 320
        assert close.reply_text == f"CONNECTION_FORCED - {reason} (heartbeat 3s)"
        with trio.fail_after(1):
            await broker.eof.wait()
        [broker_close] = broker.closes()
        assert (broker_close.reply_code, broker_close.reply_text) == (
            200,
            f"amqprouter: {reason} (heartbeat 3s)",
        )
        await wait_no_sessions(server)
    assert session.ended is End.CLIENT_SILENT
    assert len(server.watchdog) == 0


async def test_a_paused_client_is_not_judged_until_resumed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(heartbeat_every=1.0)
    async with supervised(broker, heartbeat=2) as (server, session, client):
        assert session.pause()
        await trio.sleep(120)  # the client says nothing: held on purpose, not dead
        assert session.state is State.OPEN
        assert session.unpause()
        resumed = trio.current_time()
        close = await read_close(client)
        assert round(trio.current_time() - resumed, 1) == 4.0  # judged again from the resume
        assert "sent nothing for 4s (heartbeat 2s)" in close.reply_text
        await wait_no_sessions(server)
    assert session.ended is End.CLIENT_SILENT


async def test_a_silent_broker_is_judged_while_paused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker()  # silent: the router's pause heartbeats do not make it alive
    async with supervised(broker, heartbeat=2) as (server, session, client):
        assert session.pause()
        paused = trio.current_time()
        close = await read_close(client)
        assert round(trio.current_time() - paused, 1) == 4.0
        assert "sent nothing for 4s (heartbeat 2s)" in close.reply_text
        await wait_no_sessions(server)
    assert session.ended is End.BROKER_SILENT


# --------------------------------------------------------------------------- #
# write timeouts
# --------------------------------------------------------------------------- #


async def test_a_client_that_stops_reading_is_cut_and_its_broker_side_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(answer_close=False)
    timeouts = attrs.evolve(SLOW, write=WRITE)
    async with supervised(broker, heartbeat=0, timeouts=timeouts) as (server, session, client):
        assert broker.peer is not None
        peer = broker.peer
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            await in_background(nursery, lambda: peer.send(FLOOD * 64))
            with trio.fail_after(10_000):
                await broker.eof.wait()
            nursery.cancel_scope.cancel()
        # Detected 5 s after the last read the stuck write carried, well before 6.
        assert 5.0 <= trio.current_time() - started < 6.0
        [broker_close] = broker.closes()
        assert broker_close.reply_code == 200
        assert broker_close.reply_text.startswith("amqprouter: client 127.0.0.1:")
        assert broker_close.reply_text.endswith("did not read for 5s (write timeout 5s)")
        # The client's stream was cut mid-write (no Close in the middle of a frame).
        received = await client.read_raw(100 * len(FLOOD))
        assert 0 < len(received) < len(FLOOD) * 64
        await wait_no_sessions(server)
    assert session.ended is End.CLIENT_STUCK


async def test_a_broker_that_stops_reading_is_cut_and_the_client_told(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = Broker(reading=False)
    timeouts = attrs.evolve(SLOW, write=WRITE)
    async with supervised(broker, heartbeat=0, timeouts=timeouts) as (server, session, client):
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            await in_background(nursery, lambda: client.send(FLOOD * 64))
            close = await read_close(client)
            assert 5.0 <= trio.current_time() - started < 6.0
            nursery.cancel_scope.cancel()
        assert close.reply_code == 320
        assert close.reply_text.startswith("CONNECTION_FORCED - broker fake (127.0.0.1:")
        assert close.reply_text.endswith("did not read for 5s (write timeout 5s)")
        await wait_no_sessions(server)
    assert session.ended is End.BROKER_STUCK


async def test_a_blocked_broker_may_stop_reading_until_it_unblocks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Connection.Blocked (a memory alarm) holds publishers on purpose: not a stuck write."""
    broker = Broker(reading=False, blocked=True)
    timeouts = attrs.evolve(SLOW, write=WRITE)
    data = FLOOD * 16
    async with supervised(broker, heartbeat=0, timeouts=timeouts) as (_server, session, client):
        blocked = await client.read_method()
        assert isinstance(blocked, commands.Connection.Blocked)
        sent = trio.Event()

        async def publish() -> None:
            await client.send(data)
            sent.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish)
            await trio.sleep(120)  # far past the write timeout
            assert session.state is State.OPEN
            assert not sent.is_set()  # held back by TCP, as RabbitMQ means it to be
            assert broker.peer is not None
            await broker.peer.send_method(commands.Connection.Unblocked())
            # The held write gets a fresh write timeout from the Unblocked.
            await trio.sleep(WRITE - 0.5)
            assert session.state is State.OPEN
            broker.may_read.set()
            with trio.fail_after(10_000):
                await sent.wait()
        while sum(map(len, broker.received)) < len(data):
            await trio.sleep(0.01)
        assert b"".join(broker.received) == data
        assert session.state is State.OPEN


def test_supervision_ends_count_as_snapped() -> None:
    """A peer found dead is counted like one that dropped its connection."""
    assert removal(End.BROKER_SILENT) is removal(End.BROKER_STUCK) is Removal.BROKER_SNAPPED
    assert removal(End.CLIENT_SILENT) is removal(End.CLIENT_STUCK) is Removal.CLIENT_SNAPPED
