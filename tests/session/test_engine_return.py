"""A session goes back into the forwarding engine once nothing holds it on its pumps.

A pause (and a data-rate limit) moves a session from the engine to its pump tasks; the
unpause (the limit lifted) brings it back: each pump stops at its next park, with every
byte it read written and a partial frame kept in the scanner, and the engine takes the
same sockets and scanners. These tests prove it on the real clock (the engine stamps
``time.monotonic``): the session really is back (its ``Link``, the engine's count of
links served), and the bytes each peer gets are exactly the bytes the other sent, in
order, across many pause/unpause cycles, with frames cut across the switches and
traffic flowing both ways while they happen.
"""

from __future__ import annotations

import random

import pytest
import trio

from amqprouter.routing.rate_window import DataBudget
from amqprouter.server import Server
from amqprouter.session import Session
from tests.session.test_engine_path import session_via, until
from tests.session.test_pause import body_frame
from tests.session.test_supervision import Broker
from tests.session.wire import Peer


async def back_in_engine(server: Server, session: Session) -> None:
    """The engine holds the session's link (the link is forgotten only once the
    session's task runs again, so the engine's own count says it is in), and the pumps'
    nursery is gone."""
    engine = server.engine
    assert engine is not None
    await until(lambda: session._link is not None and len(engine) == 1)
    assert session._forwarding_tasks is None


async def read_frames(client: Peer, count: int) -> list[bytes]:
    got: list[bytes] = []
    while len(got) < count:
        item = await client.read_frame()
        assert item is not None
        got.append(item.raw)
    return got


async def test_unpause_brings_the_session_back_with_a_frame_cut_across() -> None:
    """Five cycles: half a frame before each pause, the rest while paused; after each
    unpause the session is in the engine again and the broker has every frame whole."""
    broker = Broker()
    async with session_via("engine", broker) as (server, session, client):
        assert server.engine is not None and broker.peer is not None
        sent: list[bytes] = []
        for cycle in range(5):
            whole = body_frame(cycle, 3000 + cycle)
            cut = len(whole) // 2 + cycle
            await client.send(whole[:cut])  # the engine keeps it in the scanner
            await trio.sleep(0.02)
            assert session.pause()
            await until(lambda: session._link is None)
            await client.send(whole[cut:] + body_frame(100 + cycle))  # held
            sent += [whole, body_frame(100 + cycle)]
            await trio.sleep(0.05)
            assert len(broker.received) == 2 * cycle  # nothing passed the pause
            assert session.unpause()
            expected = len(sent)
            await until(lambda: len(broker.received) == expected)  # noqa: B023
            await back_in_engine(server, session)
            assert server.engine.served == cycle + 2
            # Forwarding through the engine again, both ways.
            down = body_frame(200 + cycle)
            await broker.peer.send(down)
            assert await read_frames(client, 1) == [down]
        assert broker.received == sent
        # And the engine forwards what comes next.
        await client.send(body_frame(999))
        await until(lambda: len(broker.received) == len(sent) + 1)
        assert broker.received[-1] == body_frame(999)


async def test_pause_and_unpause_at_once_goes_straight_back() -> None:
    broker = Broker()
    async with session_via("engine", broker) as (server, session, client):
        assert server.engine is not None
        for _ in range(20):
            assert session.pause()
            assert session.unpause()
        await back_in_engine(server, session)
        frames = [body_frame(n, 500) for n in range(10)]
        await client.send(b"".join(frames))
        await until(lambda: len(broker.received) == 10)
        assert broker.received == frames


@pytest.mark.parametrize("seed", [20, 21, 22])
async def test_bytes_exact_both_ways_while_pausing_and_unpausing(seed: int) -> None:
    """1.5 MiB each way in arbitrary cuts (frames split anywhere) while a task pauses
    and unpauses the session every few milliseconds: each peer receives exactly what the
    other sent, frame for frame, and the session ends in the engine."""
    rng = random.Random(seed)
    broker = Broker()
    async with session_via("engine", broker) as (server, session, client):
        assert server.engine is not None and broker.peer is not None
        peer = broker.peer
        up = [body_frame(n, rng.randrange(8, 40_000)) for n in range(120)]
        down = [body_frame(n + 10_000, rng.randrange(8, 40_000)) for n in range(120)]
        got: list[bytes] = []
        sending = 2

        async def send_cut(peer: Peer, data: bytes) -> None:
            nonlocal sending
            at = 0
            while at < len(data):
                size = rng.choice((1, 7, 100, 4096, 50_000))
                await peer.send(data[at : at + size])
                at += size
                if rng.random() < 0.2:
                    await trio.sleep(0.001)
            sending -= 1

        async def toggle() -> None:
            while sending:
                assert session.pause()
                await trio.sleep(rng.choice((0, 0.001, 0.005)))
                assert session.unpause()
                await trio.sleep(rng.choice((0, 0.001, 0.01)))

        async def read_down() -> None:
            got.extend(await read_frames(client, len(down)))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_cut, client, b"".join(up))
                nursery.start_soon(send_cut, peer, b"".join(down))
                nursery.start_soon(read_down)
                nursery.start_soon(toggle)
            await until(lambda: len(broker.received) >= len(up), timeout=20)
        assert broker.received == up
        assert got == down
        await back_in_engine(server, session)
        assert server.engine.served > 2  # it went out and came back in, many times


async def test_a_data_rate_limit_lifted_brings_the_session_back() -> None:
    broker = Broker()
    async with session_via("engine", broker) as (server, session, client):
        assert server.engine is not None
        session.data_budget = DataBudget(100_000, None)
        first = [body_frame(n, 5_000) for n in range(10)]
        await client.send(b"".join(first))  # read by the pumps, paced
        await until(lambda: len(broker.received) == 10)
        assert session._link is None
        # LIMIT DATA_RATE lifted: the server gives the session an inert budget.
        session.data_budget = DataBudget(None, None)
        more = [body_frame(n + 10, 5_000) for n in range(10)]
        await client.send(b"".join(more))
        await until(lambda: len(broker.received) == 20)
        assert broker.received == first + more
        await back_in_engine(server, session)
        assert session.data_budget is None
        assert server.engine.served == 2


class FramesOnce:
    """A trace's stand-in (trace.py's FrameObserver) that wants one read's frames and is
    then done, as a trace that reaches its bound is."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def frames(self, session: object, from_client: bool, now: float, data: bytes) -> bool:
        self.seen.append(data)
        return False

    def session_ended(self, session: object) -> None:
        pass

    def stop(self, reason: str) -> None:
        pass


async def test_a_trace_that_is_done_brings_the_session_back() -> None:
    broker = Broker()
    async with session_via("engine", broker) as (server, session, client):
        assert server.engine is not None
        observer = FramesOnce()
        assert session.watch_frames(observer)
        await until(lambda: session._link is None and len(server.engine or ()) == 0)
        await client.send(body_frame(1))  # seen by the trace, which is then done
        await until(lambda: len(broker.received) == 1)
        assert observer.seen == [body_frame(1)]
        await back_in_engine(server, session)
        assert session._trace is None
        await client.send(body_frame(2))
        await until(lambda: len(broker.received) == 2)
        assert broker.received == [body_frame(1), body_frame(2)]
        assert observer.seen == [body_frame(1)]  # the engine shows nobody
