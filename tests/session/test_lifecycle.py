"""Session behaviour at the edges: closes, drops, timeouts, refusals."""

from __future__ import annotations

from typing import Any

import trio
from pamqp import body, commands, frame, header

from amqprouter.protocol import constants
from tests.session.wire import (
    FakeBroker,
    Peer,
    broker_handshake,
    client_handshake,
    connect_client_side,
    fake_broker,
    open_and_idle,
    open_client,
    router,
    wait_no_sessions,
)

HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"


async def test_broker_drop_becomes_320_within_a_second() -> None:
    async def drop_after_open(peer: Peer, broker: FakeBroker) -> None:
        await broker_handshake(peer, broker)
        await peer.aclose()

    async with fake_broker(drop_after_open) as broker, router(broker.port) as (server, port):
        started = trio.current_time()
        client = await open_client(port)
        close = await client.read_method()
        assert isinstance(close, commands.Connection.Close)
        assert close.reply_code == 320
        assert "broker fake (127.0.0.1:" in close.reply_text
        assert "closed the connection" in close.reply_text
        await client.send_method(commands.Connection.CloseOk())
        assert await client.at_eof()
        assert trio.current_time() - started < 1.0
        await wait_no_sessions(server)


async def test_broker_drop_mid_frame_gives_whole_frames_then_close() -> None:
    deliver = frame.marshal(
        commands.Basic.Deliver(consumer_tag="c", delivery_tag=1, exchange="", routing_key="q"), 1
    )

    async def drop_mid_frame(peer: Peer, broker: FakeBroker) -> None:
        await broker_handshake(peer, broker)
        await peer.send(deliver + deliver[:10])
        await peer.aclose()

    async with fake_broker(drop_mid_frame) as broker, router(broker.port) as (server, port):
        client = await open_client(port)
        first = await client.read_frame()
        assert first is not None and first.raw == deliver
        close = await client.read_method()
        assert isinstance(close, commands.Connection.Close) and close.reply_code == 320
        await wait_no_sessions(server)


async def test_broker_close_is_relayed_and_close_ok_returned() -> None:
    got: list[object] = []

    async def close_after_open(peer: Peer, broker: FakeBroker) -> None:
        await broker_handshake(peer, broker)
        await peer.send_method(
            commands.Connection.Close(
                reply_code=320,
                reply_text="CONNECTION_FORCED - maintenance",
                class_id=0,
                method_id=0,
            )
        )
        got.append(await peer.read_method())
        await peer.aclose()

    async with fake_broker(close_after_open) as broker, router(broker.port) as (server, port):
        client = await open_client(port)
        close = await client.read_method()
        assert (close.reply_code, close.reply_text) == (320, "CONNECTION_FORCED - maintenance")
        await client.send_method(commands.Connection.CloseOk())
        assert await client.at_eof()
        await wait_no_sessions(server)
    assert isinstance(got[0], commands.Connection.CloseOk)


async def test_client_close_goes_through_and_ends_session() -> None:
    got: list[object] = []

    async def answer_close(peer: Peer, broker: FakeBroker) -> None:
        await broker_handshake(peer, broker)
        got.append(await peer.read_method())
        await peer.send_method(commands.Connection.CloseOk())
        assert await peer.at_eof()

    async with fake_broker(answer_close) as broker, router(broker.port) as (server, port):
        client = await open_client(port)
        await client.send_method(
            commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)
        )
        assert isinstance(await client.read_method(), commands.Connection.CloseOk)
        assert await client.at_eof()
        await wait_no_sessions(server)
    assert isinstance(got[0], commands.Connection.Close) and got[0].reply_text == "bye"


async def test_client_drop_closes_broker_side_with_a_close_handshake() -> None:
    got: list[object] = []
    done = trio.Event()

    async def expect_close(peer: Peer, broker: FakeBroker) -> None:
        await broker_handshake(peer, broker)
        close = await peer.read_method()
        got.append(close)
        await peer.send_method(commands.Connection.CloseOk())
        got.append(await peer.at_eof())
        done.set()

    async with fake_broker(expect_close) as broker, router(broker.port) as (server, port):
        client = await open_client(port)
        await client.aclose()
        with trio.fail_after(2):
            await done.wait()
        await wait_no_sessions(server)
    close = got[0]
    assert isinstance(close, commands.Connection.Close)
    assert close.reply_code == 200
    assert "client closed the TCP connection" in close.reply_text
    assert got[1] is True


async def test_silent_client_closed_at_handshake_timeout() -> None:
    async with router(None) as (server, port):
        client = connect_client_side(await trio.open_tcp_stream("127.0.0.1", port))
        started = trio.current_time()
        assert await client.at_eof(timeout=3)
        assert 0.9 < trio.current_time() - started < 2.0
        await wait_no_sessions(server)


async def test_wrong_protocol_header_gets_ours_back() -> None:
    async with router(None) as (server, port):
        client = connect_client_side(await trio.open_tcp_stream("127.0.0.1", port))
        await client.send(b"AMQP\x01\x01\x00\x0a")
        assert await client.read_raw(8) == constants.PROTOCOL_HEADER
        assert await client.at_eof()
        await wait_no_sessions(server)


async def test_unmapped_vhost_gets_506() -> None:
    async with router(None) as (server, port):
        client = await client_handshake(port, "orders")
        close = await client.read_method()
        assert (close.reply_code, close.reply_text) == (
            506,
            "No known broker mapping for vhost orders",
        )
        await wait_no_sessions(server)


async def test_unreachable_broker_gets_a_clear_close() -> None:
    async with fake_broker(open_and_idle) as broker:
        dead_port = broker.port
    async with router(dead_port) as (server, port):
        client = await client_handshake(port)
        close = await client.read_method()
        assert close.reply_code == 320
        assert "no broker reachable for vhost /" in close.reply_text
        await wait_no_sessions(server)


async def test_silent_broker_hits_broker_handshake_timeout() -> None:
    async def silent(peer: Peer, broker: FakeBroker) -> None:
        await trio.sleep_forever()

    async with fake_broker(silent) as broker, router(broker.port) as (server, port):
        client = await client_handshake(port)
        close = await client.read_method(timeout=3)
        assert close.reply_code == 320
        assert "did not complete the handshake within 1s" in close.reply_text
        await wait_no_sessions(server)


async def test_stricter_broker_tune_is_refused_with_530() -> None:
    strict = commands.Connection.Tune(channel_max=2047, frame_max=8192, heartbeat=60)

    async def strict_broker(peer: Peer, broker: FakeBroker) -> None:
        await broker_handshake(peer, broker, tune=strict)
        await peer.at_eof()

    async with fake_broker(strict_broker) as broker, router(broker.port) as (server, port):
        client = await client_handshake(port)
        close = await client.read_method()
        assert close.reply_code == 530
        assert "frame_max=8192" in close.reply_text
        assert "--frame-max 8192" in close.reply_text
        await wait_no_sessions(server)


async def test_client_with_smaller_frame_max_than_broker_is_fine() -> None:
    async with fake_broker(open_and_idle) as broker, router(broker.port) as (server, port):
        client = await client_handshake(port, frame_max=8192)
        assert isinstance(await client.read_method(), commands.Connection.OpenOk)
        await client.aclose()
        await wait_no_sessions(server)


async def test_frames_pass_unchanged_in_order_both_ways() -> None:
    received = bytearray()
    publish = (
        frame.marshal(commands.Basic.Publish(exchange="", routing_key="q"), 1)
        + frame.marshal(header.ContentHeader(0, 3000, commands.Basic.Properties()), 1)
        + frame.marshal(body.ContentBody(bytes(range(200)) * 15), 1)
    )
    stream = b"".join([publish, HEARTBEAT] * 200)

    async def echo(peer: Peer, broker: FakeBroker) -> None:
        await broker_handshake(peer, broker)
        with trio.move_on_after(5):
            while len(received) < len(stream):
                chunk = await peer.stream.receive_some(65536)
                received.extend(chunk)
                await peer.send(chunk)

    async with fake_broker(echo) as broker, router(broker.port) as (server, port):
        client = await open_client(port)
        # Odd-sized writes so frames straddle reads on the way through.
        for start in range(0, len(stream), 997):
            await client.send(stream[start : start + 997])
        echoed = await client.read_raw(len(stream))
        assert bytes(received) == stream
        assert echoed[: len(stream)] == stream  # the Close after it is the broker leaving
        [session] = server.sessions.values()
        assert session.ingress.frames == 800
        assert session.egress.frames == 800 + 1  # + the broker's Open-Ok
        assert session.ingress.bytes == len(stream)
        await client.aclose()


async def test_pipelined_frames_after_open_are_forwarded_after_open_ok() -> None:
    got: list[object] = []

    async def record(peer: Peer, broker: FakeBroker) -> None:
        await broker_handshake(peer, broker)
        got.append(await peer.read_method())
        await trio.sleep_forever()

    async with fake_broker(record) as broker, router(broker.port) as (_server, port):
        client = await client_handshake(port)
        await client.send_method(commands.Channel.Open(), 1)
        assert isinstance(await client.read_method(), commands.Connection.OpenOk)
        with trio.fail_after(2):
            while not got:
                await trio.sleep(0.01)
        assert isinstance(got[0], commands.Channel.Open)
        await client.aclose()


async def test_oversized_frame_from_client_is_501_and_broker_closed_cleanly() -> None:
    got: list[object] = []

    async def expect_close(peer: Peer, broker: FakeBroker) -> None:
        await broker_handshake(peer, broker)
        got.append(await peer.read_method())
        await peer.send_method(commands.Connection.CloseOk())

    async with fake_broker(expect_close) as broker, router(broker.port) as (server, port):
        client = await open_client(port)
        await client.send(constants.FRAME_HEADER_STRUCT.pack(3, 1, 1_000_000))
        close = await client.read_method()
        assert close.reply_code == 501
        await wait_no_sessions(server)
    assert isinstance(got[0], commands.Connection.Close)


async def test_start_ok_carries_router_properties() -> None:
    async with fake_broker(open_and_idle) as broker, router(broker.port) as (_server, port):
        client = await open_client(port)
        [start_ok] = broker.start_oks
        properties: dict[str, Any] = start_ok.client_properties
        assert properties["connection_name"] == "wire-test"
        host, _, client_port = properties["amqprouter_client"].rpartition(":")
        assert host == "127.0.0.1" and int(client_port) > 0
        assert properties["amqprouter_host"].startswith(f"(:{port}) ")
        await client.aclose()
