"""Pause, unpause and disconnects, timed on trio's virtual clock.

Every test here runs under ``autojump_clock`` (``MockClock(autojump_threshold=0)``):
the clock jumps to the next deadline whenever every task waits, so heartbeat
intervals, the pause limit and the close deadlines are asserted to the virtual
second without a test taking more than milliseconds. The peers are real loopback
TCP sockets (tests/session/wire.py); the broker is a fake, so that it can report
exactly what arrived and when.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import trio
import trio.testing
from pamqp import body, commands, frame

from amqprouter.protocol import constants
from amqprouter.routing import Backend, RoutingTable
from amqprouter.server import Server
from amqprouter.server.drain import Drained
from amqprouter.session import End, Session, Timeouts
from amqprouter.session.pause import HEARTBEAT_FRAME, HOLD_LIMIT
from tests.session.wire import (
    FakeBroker,
    Peer,
    broker_handshake,
    client_handshake,
    connect_client_side,
    fake_broker,
    router,
    wait_no_sessions,
)

#: Long enough that no handshake or connect deadline is what the clock jumps to.
SLOW = Timeouts(
    client_handshake=1000.0,
    connect=1000.0,
    broker_handshake=1000.0,
    close=0.5,
    disconnect=5.0,
    max_pause=300.0,
)
HEARTBEAT = 60  # negotiated by the test client, so the router beats every 30 s


@attrs.define
class Arrival:
    at: float
    raw: bytes


@attrs.define
class Recorder:
    """A fake broker that records every frame it gets (with the virtual time)."""

    frames: list[Arrival] = attrs.Factory(list)
    eof_at: float | None = None
    peer: Peer | None = None
    opened: trio.Event = attrs.Factory(trio.Event)

    async def behaviour(self, peer: Peer, broker: FakeBroker) -> None:
        await broker_handshake(peer, broker)
        self.peer = peer
        self.opened.set()
        while (item := await peer.read_frame(timeout=10_000)) is not None:
            self.frames.append(Arrival(trio.current_time(), item.raw))
            if item.method_id == constants.CONNECTION_CLOSE:
                await peer.send_method(commands.Connection.CloseOk())
        self.eof_at = trio.current_time()

    def heartbeats(self) -> list[float]:
        return [a.at for a in self.frames if a.raw == HEARTBEAT_FRAME]

    def data(self) -> bytes:
        return b"".join(a.raw for a in self.frames if a.raw != HEARTBEAT_FRAME)


def body_frame(number: int, size: int = 1000) -> bytes:
    return frame.marshal(body.ContentBody(number.to_bytes(4, "big") * (size // 4)), 1)


@asynccontextmanager
async def paused_session(
    recorder: Recorder, timeouts: Timeouts = SLOW
) -> AsyncIterator[tuple[Server, Session, Peer]]:
    """A forwarding session (client heartbeat 60) in front of ``recorder``."""
    async with (
        fake_broker(recorder.behaviour) as broker,
        router(broker.port, timeouts=timeouts) as (server, port),
    ):
        client = await client_handshake(port, heartbeat=HEARTBEAT)
        assert isinstance(await client.read_method(), commands.Connection.OpenOk)
        await recorder.opened.wait()
        [session] = server.sessions.values()
        yield server, session, client


async def until(condition: Callable[[], bool], timeout: float = 10_000) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.001)


# --------------------------------------------------------------------------- #
# pause while forwarding
# --------------------------------------------------------------------------- #


async def test_paused_session_heartbeats_broker_and_resumes_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    async with paused_session(recorder) as (_server, session, client):
        assert session.pause()
        paused_at = trio.current_time()
        sent = b"".join(body_frame(n) for n in range(50))
        await client.send(sent)
        await trio.sleep(100)
        # Nothing of the client's reached the broker; the router kept it alive.
        assert recorder.data() == b""
        assert [round(t - paused_at) for t in recorder.heartbeats()] == [30, 60, 90]
        # The other direction still flows.
        assert recorder.peer is not None
        await recorder.peer.send(body_frame(999))
        echoed = await client.read_frame()
        assert echoed is not None and echoed.raw == body_frame(999)

        assert session.unpause()
        await until(lambda: len(recorder.data()) == len(sent))
        assert recorder.data() == sent
        beats = len(recorder.heartbeats())
        await trio.sleep(100)
        assert len(recorder.heartbeats()) == beats  # no router heartbeats once resumed
        # Forwarding goes on as usual after the resume.
        await client.send(body_frame(51))
        await until(lambda: recorder.data().endswith(body_frame(51)))


async def test_pause_holds_at_most_the_bound_then_back_pressure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    big = 128 * 1024 - 8  # whole frames at the default frame_max
    stream = b"".join(body_frame(n, big) for n in range(128))  # 16 MiB
    done = trio.Event()

    async def send_everything(client: Peer) -> None:
        await client.send(stream)
        done.set()

    async with paused_session(recorder) as (_server, session, client):
        session.pause()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_everything, client)
            await trio.sleep(50)
            pause = session._pause
            assert pause is not None
            assert pause.held_bytes == HOLD_LIMIT  # read up to the bound, then stopped
            assert not done.is_set()  # the client is held back by TCP
            assert recorder.data() == b""
            session.unpause()
            await until(lambda: len(recorder.data()) == len(stream))
            assert done.is_set()
        assert recorder.data() == stream


async def test_pause_unpause_pause_again_loses_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    async with paused_session(recorder) as (_server, session, client):
        sent = b""
        for round_ in range(5):
            session.pause()
            chunk = b"".join(body_frame(round_ * 10 + n) for n in range(10))
            await client.send(chunk[:1500])  # frames straddle the pause edges
            await trio.sleep(31)
            session.unpause()
            await client.send(chunk[1500:])
            sent += chunk
        await until(lambda: len(recorder.data()) == len(sent))
        assert recorder.data() == sent


async def test_pause_longer_than_the_limit_ends_with_a_graceful_disconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    async with paused_session(recorder) as (server, session, client):
        started = trio.current_time()
        session.pause()
        close = await client.read_method(timeout=10_000)
        assert round(trio.current_time() - started) == 300
        assert isinstance(close, commands.Connection.Close)
        assert (close.reply_code, close.reply_text) == (
            320,
            "CONNECTION_FORCED - paused for longer than 300s",
        )
        await client.send_method(commands.Connection.CloseOk())
        await wait_no_sessions(server)
    assert session.ended is End.OPERATOR
    closes = [a for a in recorder.frames if a.raw[:1] == b"\x01"]
    broker_close = frame.unmarshal(closes[-1].raw)[2]
    assert isinstance(broker_close, commands.Connection.Close)
    assert broker_close.reply_code == 200


# --------------------------------------------------------------------------- #
# disconnects
# --------------------------------------------------------------------------- #


async def test_graceful_disconnect_close_handshake_with_both_sides(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    async with paused_session(recorder) as (server, session, client):
        reason = f"disconnected by operator (SESSION {session.id} DISCONNECT_GRACEFUL)"
        assert session.disconnect(End.OPERATOR, reason)
        close = await client.read_method()
        assert (close.reply_code, close.reply_text) == (320, f"CONNECTION_FORCED - {reason}")
        assert recorder.frames == []  # the broker is closed only after the client answered
        await client.send_method(commands.Connection.CloseOk())
        assert await client.at_eof()
        await wait_no_sessions(server)
    [broker_close] = [frame.unmarshal(a.raw)[2] for a in recorder.frames]
    assert isinstance(broker_close, commands.Connection.Close)
    assert (broker_close.reply_code, broker_close.reply_text) == (200, f"amqprouter: {reason}")
    assert session.ended is End.OPERATOR


async def test_graceful_disconnect_cuts_a_silent_client_at_the_disconnect_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    async with paused_session(recorder) as (server, session, client):
        started = trio.current_time()
        session.disconnect(End.OPERATOR, "test")
        assert isinstance(await client.read_method(), commands.Connection.Close)
        assert await client.at_eof(timeout=10_000)  # never answered: cut
        assert round(trio.current_time() - started, 1) == 5.0
        await wait_no_sessions(server)
    # The broker still got its clean close, after the client's deadline.
    [broker_close] = [a for a in recorder.frames]
    assert round(broker_close.at - started, 1) == 5.0


async def test_graceful_disconnect_of_a_paused_session_reads_its_close_ok(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    async with paused_session(recorder) as (server, session, client):
        session.pause()
        await client.send(body_frame(1)[:300])  # held: half a frame
        await trio.sleep(1)
        session.disconnect(End.OPERATOR, "test")
        close = await client.read_method()
        assert close.reply_code == 320
        started = trio.current_time()
        await client.send(body_frame(1)[300:])
        await client.send_method(commands.Connection.CloseOk())
        assert await client.at_eof()
        assert trio.current_time() - started < 1  # the Close-Ok was found after the held bytes
        await wait_no_sessions(server)
    # The held half frame was never forwarded; the broker got only its Close.
    [broker_close] = [frame.unmarshal(a.raw)[2] for a in recorder.frames]
    assert isinstance(broker_close, commands.Connection.Close)


async def test_forced_disconnect_cuts_both_sockets_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    async with paused_session(recorder) as (server, session, client):
        started = trio.current_time()
        assert session.disconnect(End.OPERATOR_FORCED, "test")
        assert await client.at_eof()
        await until(lambda: recorder.eof_at is not None)
        assert recorder.eof_at is not None and recorder.eof_at - started < 1  # at once
        assert recorder.frames == []  # no Close: cut
        await wait_no_sessions(server)
    assert session.ended is End.OPERATOR_FORCED


async def test_backend_disconnect_cuts_the_broker_and_tells_the_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    async with paused_session(recorder) as (server, session, client):
        assert session.disconnect(End.OPERATOR_BACKEND, "VHOST / BACKEND_DISCONNECT")
        close = await client.read_method()
        assert close.reply_code == 320
        assert close.reply_text.startswith("CONNECTION_FORCED - broker fake (127.0.0.1:")
        assert close.reply_text.endswith("disconnected by the router (VHOST / BACKEND_DISCONNECT)")
        await until(lambda: recorder.eof_at is not None)
        assert recorder.frames == []  # the broker side was cut, not closed
        await client.send_method(commands.Connection.CloseOk())
        await wait_no_sessions(server)


async def test_server_disconnect_backend_picks_that_backends_sessions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    async with paused_session(recorder) as (server, _session, client):
        assert server.disconnect_backend("other", graceful=True, reason="x") == 0
        assert server.disconnect_backend("fake", graceful=False, reason="x") == 1
        assert await client.at_eof()
        await wait_no_sessions(server)


# --------------------------------------------------------------------------- #
# clients held at Connection.Open (a paused vhost)
# --------------------------------------------------------------------------- #


async def test_client_of_a_paused_vhost_is_held_at_open_and_heartbeated(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    async with (
        fake_broker(recorder.behaviour) as broker,
        router(broker.port, timeouts=SLOW) as (server, port),
    ):
        server.vhosts.paused.add("/")
        client = await client_handshake(port, heartbeat=HEARTBEAT)
        held_at = trio.current_time()
        beats = []
        for _ in range(3):
            item = await client.read_frame(timeout=10_000)
            assert item is not None and item.raw == HEARTBEAT_FRAME
            beats.append(round(trio.current_time() - held_at))
        assert beats == [30, 60, 90]
        assert broker.accepted == []  # no broker connection while held
        [session] = server.sessions.values()
        assert session.paused
        await client.send(HEARTBEAT_FRAME + frame.marshal(commands.Channel.Open(), 1))
        await trio.sleep(1)

        session.unpause()
        assert isinstance(await client.read_method(), commands.Connection.OpenOk)
        # What the client sent while held reached the broker after the handshake.
        await until(lambda: len(recorder.frames) == 2)
        assert recorder.frames[1].raw == frame.marshal(commands.Channel.Open(), 1)
        assert server.vhosts.print_text() == "/ = PAUSED\n"
        await client.aclose()


async def test_held_client_resumes_with_the_routing_of_that_moment(
    autojump_clock: trio.testing.MockClock,
) -> None:
    old, new = Recorder(), Recorder()
    async with (
        fake_broker(old.behaviour) as old_broker,
        fake_broker(new.behaviour) as new_broker,
        router(old_broker.port, timeouts=SLOW) as (server, port),
    ):
        server.vhosts.paused.add("/")
        client = await client_handshake(port)
        await trio.sleep(10)
        server.routing = RoutingTable.single(Backend("new", "none", "127.0.0.1", new_broker.port))
        [session] = server.sessions.values()
        session.unpause()
        assert isinstance(await client.read_method(), commands.Connection.OpenOk)
        assert (len(old_broker.accepted), len(new_broker.accepted)) == (0, 1)
        await client.aclose()


async def test_held_client_is_disconnected_at_the_pause_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with router(None, timeouts=SLOW) as (server, port):
        server.vhosts.paused.add("orders")
        client = await client_handshake(port, "orders", heartbeat=0)
        started = trio.current_time()
        close = await client.read_method(timeout=10_000)
        assert round(trio.current_time() - started) == 300
        assert (close.reply_code, close.reply_text) == (
            320,
            "CONNECTION_FORCED - vhost orders paused for longer than 300s",
        )
        await client.send_method(commands.Connection.CloseOk())
        assert await client.at_eof()
        await wait_no_sessions(server)


async def test_held_client_that_leaves_ends_its_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with router(None, timeouts=SLOW) as (server, port):
        server.vhosts.paused.add("/")
        client = await client_handshake(port)
        await trio.sleep(5)
        await client.aclose()
        await wait_no_sessions(server)


async def test_drain_disconnects_gracefully_and_cuts_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    answering = Recorder()
    async with (
        fake_broker(answering.behaviour) as broker,
        router(broker.port, timeouts=SLOW) as (server, port),
    ):
        polite = await client_handshake(port)
        assert isinstance(await polite.read_method(), commands.Connection.OpenOk)
        mute = await client_handshake(port)
        assert isinstance(await mute.read_method(), commands.Connection.OpenOk)

        async def answer(peer: Peer) -> None:
            assert isinstance(await peer.read_method(), commands.Connection.Close)
            await peer.send_method(commands.Connection.CloseOk())

        outcome: list[Drained] = []

        async def drain() -> None:
            outcome.append(await server.drain(3.0))

        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            nursery.start_soon(answer, polite)
        # The mute client was still there at 3 s (SLOW's disconnect timeout is longer).
        assert outcome == [Drained(drained=1, cut_unanswered=0, cut_at_deadline=1)]
        assert round(trio.current_time() - started, 1) == 3.0
        assert server.listeners == {}
        await wait_no_sessions(server)


async def test_session_paused_during_its_handshake_is_held_at_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    async with (
        fake_broker(recorder.behaviour) as broker,
        router(broker.port, timeouts=SLOW) as (server, port),
    ):
        client = connect_client_side(await trio.open_tcp_stream("127.0.0.1", port))
        await until(lambda: len(server.sessions) == 1)
        [session] = server.sessions.values()
        assert session.pause()  # before the client even sent its protocol header
        await client.send(constants.PROTOCOL_HEADER)
        assert isinstance(await client.read_method(), commands.Connection.Start)
        await client.send_method(
            commands.Connection.StartOk(
                client_properties={}, mechanism="PLAIN", response="\0guest\0guest"
            )
        )
        assert isinstance(await client.read_method(), commands.Connection.Tune)
        await client.send_method(commands.Connection.TuneOk(2047, 131072, 0))
        await client.send_method(commands.Connection.Open(virtual_host="/"))
        await trio.sleep(60)
        assert broker.accepted == []
        session.unpause()
        assert isinstance(await client.read_method(), commands.Connection.OpenOk)


async def test_without_heartbeats_a_paused_session_sends_none(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    async with (
        fake_broker(recorder.behaviour) as broker,
        router(broker.port, timeouts=SLOW) as (server, port),
    ):
        client = await client_handshake(port, heartbeat=0)
        assert isinstance(await client.read_method(), commands.Connection.OpenOk)
        [session] = server.sessions.values()
        session.pause()
        await trio.sleep(250)
        assert recorder.heartbeats() == []
        session.unpause()
        await client.aclose()


async def test_graceful_disconnect_of_a_client_held_at_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with router(None, timeouts=SLOW) as (server, port):
        server.vhosts.paused.add("/")
        client = await client_handshake(port)
        await trio.sleep(1)
        [session] = server.sessions.values()
        assert session.disconnect(End.OPERATOR, "disconnected by operator (test)")
        close = await client.read_method()
        assert (close.reply_code, close.reply_text) == (
            320,
            "CONNECTION_FORCED - disconnected by operator (test)",
        )
        await client.send_method(commands.Connection.CloseOk())
        assert await client.at_eof()
        await wait_no_sessions(server)
    assert session.ended is End.OPERATOR
