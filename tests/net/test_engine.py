"""The forwarding engine (net/engine.py) on socket pairs, without a session or broker.

Each test runs an ``Engine`` in a nursery, hands it one link (the engine's ends of two
socket pairs) and plays both peers from the test's ends. They prove: bytes out equal
bytes in, frame for frame, whatever the read sizes and interleavings (hypothesis) and
for 5 MiB each way; a partial frame is held back until it is whole; a peer's end or a
malformed frame ends the link with the right outcome; a Close-Ok ends it clean; a
data-rate budget or an eviction hands it back with what was owed; the engine's stop
hands every link back; and a peer that never reads makes the engine hold at most one
read plus one partial frame.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing as trio_testing
from hypothesis import given, settings
from hypothesis import strategies as st

from amqprouter.net.engine import Engine, Link, Outcome
from amqprouter.protocol import constants
from amqprouter.protocol.frames import Frame, FrameScanner

FRAME_MAX = 131072


class Owner:
    """The session's side of a link: stamps, a data budget, channel-0 frames."""

    __slots__ = ("controls", "data_budget", "last_egress", "last_ingress")

    def __init__(self) -> None:
        self.last_ingress = self.last_egress = 0.0
        self.data_budget: object = None
        self.controls: list[tuple[str, tuple[int, int] | None]] = []

    def on_channel_zero(self, frames: list[Frame], side: str) -> None:
        self.controls += [(side, frame.method_id) for frame in frames]


def frame(frame_type: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", frame_type, channel, len(payload)) + payload + b"\xce"


def method(channel: int, class_id: int, method_id: int, args: bytes = b"") -> bytes:
    return frame(1, channel, struct.pack(">HH", class_id, method_id) + args)


class Pair:
    """A link's two socket pairs: the test holds ``client`` and ``broker``."""

    def __init__(self, buffer: int | None = None) -> None:
        self.client, engine_client = socket.socketpair()
        self.broker, engine_broker = socket.socketpair()
        for s in (self.client, self.broker, engine_client, engine_broker):
            s.setblocking(False)
            if buffer is not None:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
        self.owner = Owner()
        self.writing: set[object] = set()
        self.ingress = FrameScanner(FRAME_MAX)
        self.egress = FrameScanner(FRAME_MAX)
        self.link = Link(
            self.owner,
            (engine_client, "client-transport", self.ingress),
            (engine_broker, "broker-transport", self.egress),
            self.writing,
            self.owner.on_channel_zero,
        )
        self.engine_socks = (engine_client, engine_broker)

    def close(self) -> None:
        for s in (self.client, self.broker, *self.engine_socks):
            s.close()


@contextlib.asynccontextmanager
async def running_engine() -> AsyncIterator[Engine]:
    engine = Engine()
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        yield engine
        nursery.cancel_scope.cancel()


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    async with running_engine() as engine:
        yield engine


async def send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock.fileno())


async def recv_exactly(sock: socket.socket, size: int) -> bytes:
    got = bytearray()
    with trio.fail_after(30):
        while len(got) < size:
            try:
                data = sock.recv(size - len(got))
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock.fileno())
                continue
            assert data, f"end of stream after {len(got)} of {size} bytes"
            got += data
    return bytes(got)


async def run_link(engine: Engine, pair: Pair | Any, nursery: trio.Nursery) -> list[Outcome]:
    outcomes: list[Outcome] = []

    async def forward() -> None:
        outcomes.append(await engine.forward(pair.link))

    nursery.start_soon(forward)
    await trio_testing.wait_all_tasks_blocked()
    return outcomes


frames_strategy = st.lists(
    st.tuples(
        st.sampled_from([1, 2, 3, 8]),
        st.integers(1, 3),
        st.binary(max_size=3000),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=40, deadline=None)
@given(
    upstream=frames_strategy,
    downstream=frames_strategy,
    cuts=st.lists(st.integers(1, 5000), min_size=1, max_size=40),
)
async def test_bytes_out_equal_bytes_in_frame_for_frame(
    upstream: list[tuple[int, int, bytes]],
    downstream: list[tuple[int, int, bytes]],
    cuts: list[int],
) -> None:
    """Arbitrary frames, cut at arbitrary points and written in turns from both peers,
    come out the other side unchanged; the counters count every byte and frame."""
    pair = Pair()
    up = b"".join(frame(t, c, p) for t, c, p in upstream)
    down = b"".join(frame(t, c, p) for t, c, p in downstream)
    async with running_engine() as engine, trio.open_nursery() as nursery:
        outcomes = await run_link(engine, pair, nursery)
        at_up = at_down = 0
        for i, cut in enumerate(cuts * (1 + (len(up) + len(down)) // max(1, sum(cuts)))):
            if i % 2 == 0 and at_up < len(up):
                await send_all(pair.client, up[at_up : at_up + cut])
                at_up += cut
            elif at_down < len(down):
                await send_all(pair.broker, down[at_down : at_down + cut])
                at_down += cut
            if at_up >= len(up) and at_down >= len(down):
                break
        await send_all(pair.client, up[at_up:])
        await send_all(pair.broker, down[at_down:])
        assert await recv_exactly(pair.broker, len(up)) == up
        assert await recv_exactly(pair.client, len(down)) == down
        assert (pair.ingress.frames, pair.ingress.bytes) == (len(upstream), len(up))
        assert (pair.egress.frames, pair.egress.bytes) == (len(downstream), len(down))
        pair.client.close()
        with trio.fail_after(10):
            while not outcomes:
                await trio.sleep(0.01)
        assert outcomes == [Outcome.CLIENT_GONE]
    pair.close()


async def test_five_mebibytes_each_way_byte_exact(engine: Engine) -> None:
    """5 MiB of body frames each way at once, read back byte for byte."""
    payload = os.urandom(FRAME_MAX - 8)
    count = (5 << 20) // len(payload) + 1
    up = frame(3, 1, payload) * count
    down = frame(3, 2, payload[::-1]) * count
    pair = Pair()
    received: dict[str, bytes] = {}
    async with trio.open_nursery() as nursery:
        await run_link(engine, pair, nursery)

        async def read(name: str, sock: socket.socket, size: int) -> None:
            received[name] = await recv_exactly(sock, size)

        nursery.start_soon(send_all, pair.client, up)
        nursery.start_soon(send_all, pair.broker, down)
        nursery.start_soon(read, "broker", pair.broker, len(up))
        await read("client", pair.client, len(down))
        while "broker" not in received:
            await trio.sleep(0.01)
        assert received == {"broker": up, "client": down}
        nursery.cancel_scope.cancel()
    pair.close()


async def test_partial_frame_held_until_whole(engine: Engine) -> None:
    """The first bytes of a frame are not forwarded until its last byte arrives."""
    pair = Pair()
    whole = frame(3, 1, b"x" * 1000)
    async with trio.open_nursery() as nursery:
        await run_link(engine, pair, nursery)
        await send_all(pair.client, whole[:600])
        await trio.sleep(0.1)
        with pytest.raises(BlockingIOError):
            pair.broker.recv(10)
        assert pair.ingress.pending == 600
        await send_all(pair.client, whole[600:])
        assert await recv_exactly(pair.broker, len(whole)) == whole
        nursery.cancel_scope.cancel()
    pair.close()


@pytest.mark.parametrize(
    ("who", "expected"), [("client", Outcome.CLIENT_GONE), ("broker", Outcome.BROKER_GONE)]
)
async def test_a_peer_closing_ends_the_link(engine: Engine, who: str, expected: Outcome) -> None:
    pair = Pair()
    async with trio.open_nursery() as nursery:
        outcomes = await run_link(engine, pair, nursery)
        getattr(pair, who).close()
        with trio.fail_after(10):
            while not outcomes:
                await trio.sleep(0.01)
    assert outcomes == [expected]
    assert len(engine) == 0
    pair.close()


async def test_malformed_frame_ends_the_link_with_its_sender(engine: Engine) -> None:
    pair = Pair()
    async with trio.open_nursery() as nursery:
        outcomes = await run_link(engine, pair, nursery)
        await send_all(pair.broker, b"\x09\x00\x00\x00\x00\x00\x00\xce")
        with trio.fail_after(10):
            while not outcomes:
                await trio.sleep(0.01)
    assert outcomes == [Outcome.BROKER_ERROR]
    assert "frame type" in pair.link.detail
    pair.close()


async def test_close_then_close_ok_ends_clean_and_reports_channel_zero(engine: Engine) -> None:
    """Close (client) and Close-Ok (broker) pass through; the link then ends CLEAN."""
    pair = Pair()
    close = method(0, 10, 50, struct.pack(">HB", 200, 0) + struct.pack(">HH", 0, 0))
    close_ok = method(0, 10, 51)
    async with trio.open_nursery() as nursery:
        outcomes = await run_link(engine, pair, nursery)
        await send_all(pair.client, close)
        assert await recv_exactly(pair.broker, len(close)) == close
        await send_all(pair.broker, close_ok)
        assert await recv_exactly(pair.client, len(close_ok)) == close_ok
        with trio.fail_after(10):
            while not outcomes:
                await trio.sleep(0.01)
    assert outcomes == [Outcome.CLEAN]
    assert pair.owner.controls == [
        ("client", constants.CONNECTION_CLOSE),
        ("broker", constants.CONNECTION_CLOSE_OK),
    ]
    pair.close()


async def test_a_data_budget_hands_the_link_back_before_reading(engine: Engine) -> None:
    pair = Pair()
    async with trio.open_nursery() as nursery:
        outcomes = await run_link(engine, pair, nursery)
        pair.owner.data_budget = object()
        await send_all(pair.client, frame(3, 1, b"held"))
        with trio.fail_after(10):
            while not outcomes:
                await trio.sleep(0.01)
    assert outcomes == [Outcome.LEFT]
    # Not read: the task path reads it, paced.
    assert pair.engine_socks[0].recv(100) == frame(3, 1, b"held")
    pair.close()


async def test_eviction_and_cancellation_hand_the_sockets_back(engine: Engine) -> None:
    pair = Pair()
    async with trio.open_nursery() as nursery:
        outcomes = await run_link(engine, pair, nursery)
        engine.evict(pair.link)
        await trio_testing.wait_all_tasks_blocked()
        assert outcomes == [Outcome.LEFT]
        assert len(engine) == 0
    other = Pair()
    with trio.move_on_after(0.1) as scope:
        await engine.forward(other.link)
    assert scope.cancelled_caught
    assert len(engine) == 0
    # The engine no longer reads the link: data stays in the socket for its new owner.
    await send_all(other.client, b"after")
    await trio.sleep(0.1)
    assert other.engine_socks[0].recv(10) == b"after"
    pair.close()
    other.close()


async def test_stopping_the_engine_hands_every_link_back() -> None:
    engine = Engine()
    pairs = [Pair() for _ in range(3)]
    outcomes: list[Outcome] = []

    async def forward(pair: Pair) -> None:
        outcomes.append(await engine.forward(pair.link))

    async with trio.open_nursery() as outer, trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        for pair in pairs:
            outer.start_soon(forward, pair)
        await trio_testing.wait_all_tasks_blocked()
        assert len(engine) == 3
        nursery.cancel_scope.cancel()
    assert outcomes == [Outcome.LEFT] * 3
    for pair in pairs:
        pair.close()


async def test_a_peer_that_never_reads_bounds_what_the_engine_holds(engine: Engine) -> None:
    """The broker writes 64 MiB to a client that reads nothing: the engine stops reading
    the broker once a write is owed, so it holds at most one read; the client's
    transport is marked as being written (the watchdog's stuck-write check)."""
    pair = Pair(buffer=65536)
    chunk = frame(3, 1, b"y" * (FRAME_MAX - 8))
    sent = 0
    async with trio.open_nursery() as nursery:
        await run_link(engine, pair, nursery)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and sent < 64 << 20:
            try:
                sent += pair.broker.send(chunk)
            except BlockingIOError:
                await trio.sleep(0.05)
        await trio.sleep(0.2)
        assert sent < 64 << 20, "the broker side never filled up"
        held = len(pair.link.owed_to_client) + pair.egress.pending
        assert held <= 256 * 1024 + FRAME_MAX
        assert "client-transport" in pair.writing
        nursery.cancel_scope.cancel()
    pair.close()


@pytest.mark.parametrize("before_entering", [True, False])
async def test_bytes_and_end_of_stream_together_end_the_link(
    engine: Engine, before_entering: bool
) -> None:
    """A partial frame and the peer's FIN arriving together: the short read that takes
    the bytes is not the last one (no further edge would come for the end of stream)."""
    pair = Pair()
    partial = frame(3, 1, b"x" * 100)[:15]
    async with trio.open_nursery() as nursery:
        if before_entering:
            await send_all(pair.client, partial)
            pair.client.shutdown(socket.SHUT_WR)
        outcomes = await run_link(engine, pair, nursery)
        if not before_entering:
            pair.client.sendall(partial)
            pair.client.shutdown(socket.SHUT_WR)
        with trio.fail_after(5):
            while not outcomes:
                await trio.sleep(0.01)
    assert outcomes == [Outcome.CLIENT_GONE]
    assert pair.ingress.pending == 15
    pair.close()
