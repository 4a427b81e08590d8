"""A session's whole life over memory transports, on trio's mock clock.

No sockets and no real time: the client and the scripted broker are the far ends of
``MemoryTransport`` pairs (tests/session/memory.py), and ``autojump_clock`` jumps over
every wait, so timeouts of seconds run in milliseconds. What a client and a broker see
here is what they see over TCP (tests/session/test_lifecycle.py shows it on sockets).
"""

from __future__ import annotations

import trio
import trio.testing
from pamqp import body, commands, frame, header

from amqprouter.net.memory_transport import memory_transport_pair
from amqprouter.protocol import constants
from amqprouter.session import End, State
from amqprouter.session.pause import HEARTBEAT_FRAME
from tests.session.memory import (
    CLIENT,
    InMemory,
    MemoryPeer,
    broker_handshake,
    client_handshake,
    ended,
    in_memory_session,
)


def publish(payload: bytes, channel: int = 1) -> bytes:
    return (
        frame.marshal(commands.Basic.Publish(exchange="", routing_key="q"), channel)
        + frame.marshal(header.ContentHeader(body_size=len(payload)), channel)
        + frame.marshal(body.ContentBody(payload), channel)
    )


def deliver(payload: bytes, tag: int, channel: int = 1) -> bytes:
    return (
        frame.marshal(
            commands.Basic.Deliver(
                consumer_tag="c", delivery_tag=tag, exchange="", routing_key="q"
            ),
            channel,
        )
        + frame.marshal(header.ContentHeader(body_size=len(payload)), channel)
        + frame.marshal(body.ContentBody(payload), channel)
    )


async def idle_broker(peer: MemoryPeer) -> None:
    await broker_handshake(peer)
    await trio.sleep_forever()


async def opened(under_test: InMemory, *, heartbeat: int = 0) -> None:
    await client_handshake(under_test.client, heartbeat=heartbeat)
    assert isinstance(await under_test.client.read_method(), commands.Connection.OpenOk)


async def test_memory_pair_is_a_connected_byte_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = memory_transport_pair(max_buffer=4)
    assert (left.local_name(), left.peer_name()) == (right.peer_name(), right.local_name())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(left.send_all, b"abcdefghij")  # parks at 4 bytes buffered
        await trio.sleep(1)
        assert right.pending() == 4
        received = b""
        while len(received) < 10:
            await right.wait_readable()
            received += right.recv(3)
    assert received == b"abcdefghij"
    left.close()
    assert right.recv(10) == b"", "the peer's close is an end of stream"
    assert right.closed is False and left.closed is True
    await right.wait_readable()  # returns at once: EOF is readable


async def test_a_full_open_through_a_scripted_broker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start_oks: list[commands.Connection.StartOk] = []

    async def broker(peer: MemoryPeer) -> None:
        start_oks.append(await broker_handshake(peer))
        await trio.sleep_forever()

    async with in_memory_session(broker) as under_test:
        began = trio.current_time()
        await opened(under_test)
        session = under_test.session
        assert session.state is State.OPEN
        assert session.vhost == "/" and session.connection_name == "memory-test"
        assert session.backend is not None and session.backend.name == "fake"
        assert session.broker_address == ("127.0.0.1", 5672)
        assert session.client_address == CLIENT
        # The broker is told who the client is, in the client's own StartOk.
        (start_ok,) = start_oks
        assert start_ok.client_properties["connection_name"] == "memory-test"
        assert start_ok.client_properties["amqprouter_client"] == "10.0.0.1:40000"
        assert trio.current_time() == began, "nothing waited on the clock"
        assert len(under_test.brokers) == 1


async def test_an_ipv6_client_is_named_in_brackets(autojump_clock: trio.testing.MockClock) -> None:
    """Address and port are told apart wherever an IPv6 client is named with its port:
    the broker's view (amqprouter_client) and the Close the broker gets when it leaves."""
    start_oks: list[commands.Connection.StartOk] = []
    closes: list[object] = []

    async def broker(peer: MemoryPeer) -> None:
        start_oks.append(await broker_handshake(peer))
        closes.append(await peer.read_method())
        await peer.send_method(commands.Connection.CloseOk())

    async with in_memory_session(broker, client=("2001:db8::77", 4242)) as under_test:
        await opened(under_test)
        under_test.client.transport.close()  # gone without a Close
        await ended(under_test)
    (start_ok,) = start_oks
    assert start_ok.client_properties["amqprouter_client"] == "[2001:db8::77]:4242"
    (close,) = closes
    assert isinstance(close, commands.Connection.Close)
    assert close.reply_text.endswith("([2001:db8::77]:4242)"), close.reply_text


async def test_forwarding_is_frame_exact_both_ways(
    autojump_clock: trio.testing.MockClock,
) -> None:
    upstream = publish(b"x" * 70_000) + publish(b"") + publish(bytes(range(256)))
    downstream = b"".join(deliver(b"y" * size, tag) for tag, size in enumerate((1, 9000, 0), 1))
    received: list[bytes] = []

    async def broker(peer: MemoryPeer) -> None:
        await broker_handshake(peer)
        received.append(await peer.read_raw(len(upstream)))
        # Sent in uneven pieces: frames are cut across writes.
        for start in range(0, len(downstream), 777):
            await peer.send(downstream[start : start + 777])
        await trio.sleep_forever()

    async with in_memory_session(broker) as under_test:
        await opened(under_test)
        for start in range(0, len(upstream), 1000):
            await under_test.client.send(upstream[start : start + 1000])
        assert await under_test.client.read_raw(len(downstream)) == downstream
        assert received == [upstream]
        session = under_test.session
        assert session.ingress.frames >= 9 and session.egress.frames >= 9


async def test_a_broker_close_reaches_the_client(autojump_clock: trio.testing.MockClock) -> None:
    close_oks: list[object] = []

    async def broker(peer: MemoryPeer) -> None:
        await broker_handshake(peer)
        await peer.send_method(
            commands.Connection.Close(
                reply_code=320, reply_text="CONNECTION_FORCED - shutdown", class_id=0, method_id=0
            )
        )
        close_oks.append(await peer.read_method())

    async with in_memory_session(broker) as under_test:
        await opened(under_test)
        close = await under_test.client.read_method()
        assert isinstance(close, commands.Connection.Close)
        assert (close.reply_code, close.reply_text) == (320, "CONNECTION_FORCED - shutdown")
        await under_test.client.send_method(commands.Connection.CloseOk())
        await ended(under_test)
        assert [type(m) for m in close_oks] == [commands.Connection.CloseOk]
        assert under_test.session.ended is End.CLEAN
        assert under_test.session.close_started_by == "broker"
        assert await under_test.client.at_eof()


async def test_a_client_close_completes_with_the_broker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    closes: list[object] = []

    async def broker(peer: MemoryPeer) -> None:
        await broker_handshake(peer)
        closes.append(await peer.read_method())
        await peer.send_method(commands.Connection.CloseOk())

    async with in_memory_session(broker) as under_test:
        await opened(under_test)
        await under_test.client.send_method(
            commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)
        )
        assert isinstance(await under_test.client.read_method(), commands.Connection.CloseOk)
        await ended(under_test)
        (close,) = closes
        assert isinstance(close, commands.Connection.Close) and close.reply_text == "bye"
        assert under_test.session.ended is End.CLEAN
        assert under_test.session.close_started_by == "client"


async def test_a_broker_that_vanishes_is_a_320_to_the_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def broker(peer: MemoryPeer) -> None:
        await broker_handshake(peer)
        await peer.send(publish(b"half")[:5])  # then gone, mid-frame
        peer.transport.close()

    async with in_memory_session(broker) as under_test:
        await opened(under_test)
        close = await under_test.client.read_method()
        assert isinstance(close, commands.Connection.Close)
        assert close.reply_code == constants.CONNECTION_FORCED
        assert close.reply_text == (
            "CONNECTION_FORCED - broker fake (127.0.0.1:5672) closed the connection"
        )
        await under_test.client.send_method(commands.Connection.CloseOk())
        await ended(under_test)
        assert under_test.session.ended is End.BROKER_GONE


async def test_the_client_handshake_times_out_on_the_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with in_memory_session(idle_broker) as under_test:
        began = trio.current_time()
        await under_test.client.send(constants.PROTOCOL_HEADER)  # then nothing more
        assert isinstance(await under_test.client.read_method(), commands.Connection.Start)
        await ended(under_test)
        timeout = under_test.session.settings.timeouts.client_handshake
        assert trio.current_time() - began == timeout
        assert await under_test.client.at_eof()
        assert under_test.brokers == [], "no broker was connected for it"


async def test_pause_holds_the_client_and_heartbeats_the_broker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    heard: list[tuple[float, bytes]] = []

    async def broker(peer: MemoryPeer) -> None:
        await broker_handshake(peer, heartbeat=10)
        while (item := await peer.read_frame(timeout=1000)) is not None:
            heard.append((trio.current_time(), item.raw))

    async with in_memory_session(broker) as under_test:
        await opened(under_test, heartbeat=10)
        session = under_test.session
        assert session.pause()
        paused_at = trio.current_time()
        held = publish(b"held while paused")
        await under_test.client.send(held)
        await trio.sleep(12)
        # Half the 10 s interval apart, as RabbitMQ paces its own; nothing forwarded.
        assert [(at - paused_at, raw) for at, raw in heard] == [
            (5.0, HEARTBEAT_FRAME),
            (10.0, HEARTBEAT_FRAME),
        ]
        assert session.unpause()
        await trio.sleep(1)
        frames = b"".join(raw for _, raw in heard[2:])
        assert frames == held, "what the client sent while paused follows, unchanged"
        await trio.sleep(6)  # (under two intervals in all: neither peer heartbeats)
        assert len(heard) == 2 + 3, "no heartbeats once resumed"
        assert session.state is State.OPEN


async def test_a_graceful_disconnect_closes_both_sides(
    autojump_clock: trio.testing.MockClock,
) -> None:
    closes: list[object] = []

    async def broker(peer: MemoryPeer) -> None:
        await broker_handshake(peer)
        closes.append(await peer.read_method())
        await peer.send_method(commands.Connection.CloseOk())

    async with in_memory_session(broker) as under_test:
        await opened(under_test)
        session = under_test.session
        assert session.disconnect(End.OPERATOR, "maintenance")
        close = await under_test.client.read_method()
        assert isinstance(close, commands.Connection.Close)
        assert (close.reply_code, close.reply_text) == (320, "CONNECTION_FORCED - maintenance")
        assert closes == [], "the broker is closed once the client has answered"
        await under_test.client.send_method(commands.Connection.CloseOk())
        await ended(under_test)
        (broker_close,) = closes
        assert isinstance(broker_close, commands.Connection.Close)
        assert (broker_close.reply_code, broker_close.reply_text) == (
            200,
            "amqprouter: maintenance",
        )
        assert session.ended is End.OPERATOR and session.state is State.CLOSED
        assert await under_test.client.at_eof()


async def test_an_unanswered_disconnect_is_bounded_on_the_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with in_memory_session(idle_broker) as under_test:
        await opened(under_test)
        began = trio.current_time()
        assert under_test.session.disconnect(End.OPERATOR, "maintenance")
        assert isinstance(await under_test.client.read_method(), commands.Connection.Close)
        await ended(under_test)  # the client never answers, nor does the broker
        timeouts = under_test.session.settings.timeouts
        assert trio.current_time() - began == timeouts.disconnect + timeouts.close


async def test_a_client_that_stops_reading_is_cut_after_the_write_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    write_timeout = 30.0  # no heartbeat negotiated: the default write timeout

    async def flooding_broker(peer: MemoryPeer) -> None:
        await broker_handshake(peer)
        for tag in range(1, 51):  # 500 KB: more than the client's pair holds
            await peer.send(deliver(b"z" * 10_000, tag))
        await trio.sleep_forever()

    async with in_memory_session(flooding_broker, max_buffer=64 * 1024) as under_test:
        await opened(under_test)
        began = trio.current_time()
        await ended(under_test, timeout=write_timeout * 2)  # the client reads nothing
        session = under_test.session
        assert session.ended is End.CLIENT_STUCK
        assert session.end_reason is not None and "did not read for 30s" in session.end_reason
        assert write_timeout <= trio.current_time() - began < write_timeout + 1
