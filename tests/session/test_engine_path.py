"""What a forwarding session does, on both data planes, on the real clock.

Each test runs twice: through the forwarding engine (``--forwarding engine``,
net/engine.py) and through the session's own pump tasks. The engine stamps its reads
with ``time.monotonic``, so these tests use the real clock (the supervision and pause
tests on trio's virtual clock run their sessions on the task path); the waits are
short. They prove that the engine really carries the session (the engine's count of
links served and the session's link), and that the counters, supervision (a client that
never reads is cut, holding a bounded amount; a silent broker is found), session
control (pause leaves the engine, test_engine_return.py has the way back; graceful,
forced and backend disconnects), a data-rate limit, channel 0 (Close/Close-Ok clean,
Blocked) and a malformed frame behave the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import pytest
import trio
from pamqp import commands

from amqprouter.net.sockets import READ_SIZE
from amqprouter.protocol import constants
from amqprouter.routing.rate_window import DataBudget
from amqprouter.server import Server
from amqprouter.server.server import Forwarding
from amqprouter.session import End, Session, Timeouts
from tests.session.test_pause import body_frame
from tests.session.test_supervision import Broker, beat, read_close
from tests.session.wire import (
    Peer,
    client_handshake,
    fake_broker,
    router,
    wait_no_sessions,
)

TIMEOUTS = Timeouts(
    client_handshake=5.0, connect=5.0, broker_handshake=5.0, close=0.5, disconnect=2.0, write=1.0
)
FLOOD = body_frame(0, 128 * 1024 - 8) * 8  # 1 MiB of whole frames

pytestmark = pytest.mark.parametrize("forwarding", ["engine", "tasks"])


@asynccontextmanager
async def session_via(
    forwarding: Forwarding, broker: Broker, heartbeat: int = 0
) -> AsyncIterator[tuple[Server, Session, Peer]]:
    async with (
        fake_broker(broker.behaviour) as fake,
        router(fake.port, timeouts=TIMEOUTS, forwarding=forwarding) as (server, port),
    ):
        client = await client_handshake(port, heartbeat=heartbeat)
        assert isinstance(await client.read_method(), commands.Connection.OpenOk)
        await broker.opened.wait()
        [session] = server.sessions.values()
        # The session entered its data plane: the engine holds its link, or it has none.
        with trio.fail_after(5):
            while forwarding == "engine" and session._link is None:
                await trio.sleep(0.001)
        assert (session._link is not None) == (forwarding == "engine")
        yield server, session, client


async def until(condition: object, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not condition():  # type: ignore[operator]
            await trio.sleep(0.005)


async def test_frames_and_counters(forwarding: Forwarding) -> None:
    """Frames both ways arrive unchanged; the scanners count them; CONN's times move."""
    broker = Broker()
    async with session_via(forwarding, broker) as (server, session, client):
        assert broker.peer is not None
        frames = [body_frame(n, 100 + n) for n in range(50)]
        before = session.last_ingress
        counted = (session.ingress.frames, session.egress.frames, session.ingress.bytes)
        await client.send(b"".join(frames))
        await until(lambda: len(broker.received) >= 50)
        assert broker.received[:50] == frames
        await broker.peer.send(b"".join(reversed(frames)))
        for expected in reversed(frames):
            item = await client.read_frame()
            assert item is not None and item.raw == expected
        assert session.ingress.frames - counted[0] == 50
        assert session.egress.frames - counted[1] == 50
        assert session.ingress.bytes - counted[2] == sum(map(len, frames))
        assert session.last_ingress > before
        if server.engine is not None:
            assert server.engine.served == 1


async def test_close_handshake_through_is_clean(forwarding: Forwarding) -> None:
    broker = Broker()
    async with session_via(forwarding, broker) as (server, session, client):
        await client.send_method(commands.Connection.Close(200, "bye", 0, 0))
        assert isinstance(await client.read_method(), commands.Connection.CloseOk)
        await wait_no_sessions(server)
    assert session.ended is End.CLEAN
    assert session.close_started_by == "client"


async def test_blocked_is_forwarded_and_seen(forwarding: Forwarding) -> None:
    broker = Broker()
    async with session_via(forwarding, broker) as (_server, session, client):
        assert broker.peer is not None
        await broker.peer.send_method(commands.Connection.Blocked(reason="low on memory"))
        assert isinstance(await client.read_method(), commands.Connection.Blocked)
        await until(lambda: session._blocked)
        await broker.peer.send_method(commands.Connection.Unblocked())
        assert isinstance(await client.read_method(), commands.Connection.Unblocked)
        await until(lambda: not session._blocked)


async def test_malformed_frame_from_the_broker(forwarding: Forwarding) -> None:
    broker = Broker()
    async with session_via(forwarding, broker) as (server, session, client):
        assert broker.peer is not None
        await broker.peer.send(b"\x09\x00\x00\x00\x00\x00\x00\xce")
        close = await read_close(client)
        assert close.reply_code == constants.CONNECTION_FORCED
        await wait_no_sessions(server)
    assert session.ended is End.BROKER_ERROR


async def test_a_client_that_never_reads_is_cut_holding_a_bound(forwarding: Forwarding) -> None:
    """The broker floods a client that reads nothing: the router stops reading the broker
    once a write is owed (it holds at most one read and one partial frame), and the
    watchdog cuts the client after the write timeout; the broker gets a Close."""
    broker = Broker(answer_close=False)
    async with session_via(forwarding, broker) as (server, session, _client):
        assert broker.peer is not None
        peer = broker.peer
        async with trio.open_nursery() as nursery:

            async def flood() -> None:
                with (
                    trio.move_on_after(10),
                    suppress(trio.BrokenResourceError, trio.ClosedResourceError),
                ):
                    await peer.send(FLOOD * 64)

            nursery.start_soon(flood)
            await until(lambda: session.client in session._writing)
            link = session._link
            if link is not None:
                held = len(link.owed_to_client) + session.egress.pending
                assert held <= READ_SIZE + session.egress.frame_max
            with trio.fail_after(5):
                await broker.eof.wait()
            nursery.cancel_scope.cancel()
        [close] = broker.closes()
        assert close.reply_text.endswith("did not read for 1s (write timeout 1s)")
        await wait_no_sessions(server)
    assert session.ended is End.CLIENT_STUCK


async def test_a_silent_broker_is_found(forwarding: Forwarding) -> None:
    """Heartbeat 1 s: a broker silent for two intervals ends the session with a 320."""
    broker = Broker()  # never beats
    async with (
        session_via(forwarding, broker, heartbeat=1) as (server, session, client),
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(beat, client, 0.3)  # the client keeps its side alive
        with trio.fail_after(5):
            close = await read_close(client)
        nursery.cancel_scope.cancel()
        assert close.reply_code == constants.CONNECTION_FORCED
        await wait_no_sessions(server)
    assert session.ended is End.BROKER_SILENT


async def test_pause_leaves_the_engine_and_unpause_delivers_in_order(
    forwarding: Forwarding,
) -> None:
    broker = Broker()
    async with session_via(forwarding, broker) as (server, session, client):
        await client.send(body_frame(1))
        await until(lambda: len(broker.received) == 1)
        assert session.pause()
        await until(lambda: session._link is None)
        if server.engine is not None:
            assert len(server.engine) == 0
        await client.send(body_frame(2) + body_frame(3))
        await trio.sleep(0.2)
        assert len(broker.received) == 1
        assert session.unpause()
        await until(lambda: len(broker.received) == 3)
        assert broker.received == [body_frame(1), body_frame(2), body_frame(3)]


async def test_a_data_rate_limit_paces_the_client(forwarding: Forwarding) -> None:
    """A budget given while forwarding (LIMIT DATA_RATE): the engine hands the session
    back at the client's next read, and the pumps pace it; nothing is lost."""
    broker = Broker()
    async with session_via(forwarding, broker) as (_server, session, client):
        session.data_budget = DataBudget(200_000, None)
        frames = [body_frame(n, 10_000) for n in range(40)]  # 400 KB: about 2 s
        started = trio.current_time()
        await client.send(b"".join(frames))
        await until(lambda: len(broker.received) == 40, timeout=10)
        assert trio.current_time() - started >= 1.0
        assert broker.received == frames
        assert session._link is None


async def test_graceful_disconnect(forwarding: Forwarding) -> None:
    broker = Broker()
    async with session_via(forwarding, broker) as (server, session, client):
        assert session.disconnect(End.OPERATOR, "maintenance")
        close = await read_close(client)
        assert close.reply_code == constants.CONNECTION_FORCED
        assert "maintenance" in close.reply_text
        await client.send_method(commands.Connection.CloseOk())
        await wait_no_sessions(server)
        assert [c.reply_code for c in broker.closes()] == [200]
    assert session.ended is End.OPERATOR
    if server.engine is not None:
        assert len(server.engine) == 0


async def test_forced_and_backend_disconnects(forwarding: Forwarding) -> None:
    broker = Broker()
    async with session_via(forwarding, broker) as (server, session, client):
        assert session.disconnect(End.OPERATOR_BACKEND, "backend going")
        close = await read_close(client)
        assert close.reply_code == constants.CONNECTION_FORCED
        await wait_no_sessions(server)
    assert session.ended is End.OPERATOR_BACKEND
    broker = Broker()
    async with session_via(forwarding, broker) as (server, session, client):
        assert session.disconnect(End.OPERATOR_FORCED, "now")
        assert await client.at_eof()
        await wait_no_sessions(server)
    assert session.ended is End.OPERATOR_FORCED


async def test_five_mebibytes_each_way_at_once(forwarding: Forwarding) -> None:
    """5 MiB of body frames each way at the same time arrive byte for byte."""
    broker = Broker()
    async with session_via(forwarding, broker) as (_server, _session, client):
        assert broker.peer is not None
        peer = broker.peer
        up = [body_frame(n, 128 * 1024 - 8) for n in range(40)]
        down = [body_frame(n + 1000, 128 * 1024 - 8) for n in range(40)]
        got: list[bytes] = []

        async def read_down() -> None:
            while len(got) < len(down):
                item = await client.read_frame()
                assert item is not None
                got.append(item.raw)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send, b"".join(up))
            nursery.start_soon(peer.send, b"".join(down))
            nursery.start_soon(read_down)
            await until(lambda: len(broker.received) >= len(up), timeout=20)
        assert broker.received == up
        assert got == down


async def test_close_deadline_when_the_broker_never_answers(forwarding: Forwarding) -> None:
    """A Close through the router starts the close timeout (0.5 s); a broker that never
    sends Close-Ok ends the session at it."""
    broker = Broker(answer_close=False)
    async with session_via(forwarding, broker) as (server, session, client):
        started = trio.current_time()
        await client.send_method(commands.Connection.Close(200, "bye", 0, 0))
        await wait_no_sessions(server)
        assert 0.4 <= trio.current_time() - started < 3.0
    assert session.ended is End.TIMEOUT
