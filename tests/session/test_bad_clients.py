"""Hundreds of misbehaving clients: each gets a clear answer, none leaks a session."""

from __future__ import annotations

import socket
import struct
from collections.abc import Awaitable, Callable

import trio
from pamqp import commands, frame

from amqprouter.protocol import constants
from amqprouter.session import Timeouts
from tests.session.wire import (
    FakeBroker,
    Peer,
    broker_handshake,
    client_handshake,
    connect_client_side,
    fake_broker,
    open_client,
    router,
    wait_no_sessions,
)

Kind = Callable[[int], Awaitable[None]]


async def _raw(port: int) -> Peer:
    return connect_client_side(await trio.open_tcp_stream("127.0.0.1", port))


async def garbage(port: int) -> None:
    client = await _raw(port)
    await client.send(b"\x00\xff" * 50)
    assert await client.read_raw(8) == constants.PROTOCOL_HEADER


async def http_request(port: int) -> None:
    client = await _raw(port)
    await client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await client.read_raw(8) == constants.PROTOCOL_HEADER


async def amqp_0_10_header(port: int) -> None:
    client = await _raw(port)
    await client.send(b"AMQP\x01\x01\x00\x0a")
    assert await client.read_raw(8) == constants.PROTOCOL_HEADER
    assert await client.at_eof()


async def bad_frame_after_header(port: int) -> None:
    client = await _raw(port)
    await client.send(constants.PROTOCOL_HEADER + b"\x09\x00\x00\x00\x00\x00\x00\xce")
    assert isinstance(await client.read_method(), commands.Connection.Start)
    close = await client.read_method()
    assert close.reply_code == 501


async def oversized_start_ok(port: int) -> None:
    client = await _raw(port)
    await client.send(constants.PROTOCOL_HEADER + struct.pack(">BHI", 1, 0, 1 << 30))
    assert isinstance(await client.read_method(), commands.Connection.Start)
    assert (await client.read_method()).reply_code == 501


async def malformed_start_ok(port: int) -> None:
    client = await _raw(port)
    payload = b"\x00\x0a\x00\x0b\x00\x00\xff\xff"  # client_properties claims 64 KiB
    await client.send(
        constants.PROTOCOL_HEADER + struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce"
    )
    assert isinstance(await client.read_method(), commands.Connection.Start)
    assert (await client.read_method()).reply_code == 501


async def silent(port: int) -> None:
    client = await _raw(port)
    assert await client.at_eof()


async def half_header_then_silence(port: int) -> None:
    client = await _raw(port)
    await client.send(b"AMQ")
    assert await client.at_eof()


async def connect_and_reset(port: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


async def drop_after_start_ok(port: int) -> None:
    client = await _raw(port)
    await client.send(constants.PROTOCOL_HEADER)
    await client.read_method()
    await client.send(
        frame.marshal(commands.Connection.StartOk(client_properties={}, response="\0a\0b"), 0)
    )
    await client.aclose()


async def drop_while_opening(port: int) -> None:
    client = await client_handshake(port)
    await client.aclose()


async def garbage_after_open(port: int) -> None:
    client = await open_client(port)
    await client.send(b"\x01\x00\x01\x00\x00\x00\x01x\x00")  # bad frame-end
    close = await client.read_method()
    assert close.reply_code == 501


KINDS: list[Kind] = [
    garbage,
    http_request,
    amqp_0_10_header,
    bad_frame_after_header,
    oversized_start_ok,
    malformed_start_ok,
    silent,
    half_header_then_silence,
    connect_and_reset,
    drop_after_start_ok,
    drop_while_opening,
    garbage_after_open,
]


async def _broker(peer: Peer, broker: FakeBroker) -> None:
    await broker_handshake(peer, broker)
    # Answer the router's Close when its client misbehaves or vanishes.
    while (method := await peer.read_method()) is not None:
        if isinstance(method, commands.Connection.Close):
            await peer.send_method(commands.Connection.CloseOk())


async def test_hundreds_of_bad_clients_leave_no_session() -> None:
    timeouts = Timeouts(client_handshake=0.5, connect=1.0, broker_handshake=1.0, close=0.3)
    failures: list[BaseException] = []
    limit = trio.CapacityLimiter(40)

    async def one(kind: Kind, port: int) -> None:
        async with limit:
            try:
                with trio.fail_after(5):
                    await kind(port)
            except BaseException as exc:  # collect, so one report names every failing kind
                failures.append(exc)
                raise

    async with (
        fake_broker(_broker) as broker,
        router(broker.port, timeouts=timeouts) as (
            server,
            port,
        ),
    ):
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for index in range(360):
                    nursery.start_soon(one, KINDS[index % len(KINDS)], port)
        await wait_no_sessions(server)
        # And the router still serves a well-behaved client.
        client = await open_client(port)
        assert len(server.sessions) == 1
        await client.aclose()
        await wait_no_sessions(server)
    assert not failures
