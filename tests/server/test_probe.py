"""The AMQP probe against real loopback listeners and the machine's RabbitMQ."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial

import pytest
import trio
from pamqp import commands, frame

from amqprouter.net.resolver import Resolver
from amqprouter.protocol import constants
from amqprouter.protocol.proxy_header import ProxyHeader, parse
from amqprouter.routing import Backend
from amqprouter.server import Server
from amqprouter.server.probe import probe_backend
from amqprouter.session import SessionSettings
from tests.brokers import SYSTEM_PORT, SystemBroker, free_port

#: The probe's own bound in these tests; a hang fails the test instead of stalling it.
WITHIN = 0.3

Behaviour = Callable[[trio.SocketStream, list[bytes]], Awaitable[None]]


@asynccontextmanager
async def listener(behaviour: Behaviour) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A loopback listener running ``behaviour`` per connection; what each peer sent."""
    received: list[bytes] = []

    async def handle(stream: trio.SocketStream) -> None:
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await behaviour(stream, received)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1], received
        nursery.cancel_scope.cancel()


async def read_header_then(stream: trio.SocketStream, received: list[bytes]) -> bytes:
    data = b""
    with trio.fail_after(5):
        while len(data) < 8:
            chunk = await stream.receive_some(8 - len(data))
            if not chunk:
                break
            data += chunk
    received.append(data)
    return data


async def answers_start(stream: trio.SocketStream, received: list[bytes]) -> None:
    await read_header_then(stream, received)
    start = commands.Connection.Start(server_properties={"product": "fake"}, mechanisms="PLAIN")
    await stream.send_all(frame.marshal(start, 0))
    # The probe says nothing more and closes: the next read is the end of the stream.
    with trio.fail_after(5):
        received.append(await stream.receive_some(100))


async def says_nothing(stream: trio.SocketStream, received: list[bytes]) -> None:
    await read_header_then(stream, received)
    await trio.sleep_forever()


async def hangs_up(stream: trio.SocketStream, received: list[bytes]) -> None:
    await stream.aclose()


async def speaks_http(stream: trio.SocketStream, received: list[bytes]) -> None:
    await read_header_then(stream, received)
    await stream.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    await trio.sleep_forever()


async def answers_tune(stream: trio.SocketStream, received: list[bytes]) -> None:
    await read_header_then(stream, received)
    await stream.send_all(frame.marshal(commands.Connection.Tune(), 0))
    await trio.sleep_forever()


async def probe(port: int, host: str = "127.0.0.1") -> str | None:
    return await probe_backend(Resolver(), Backend("b", "dc", host, port), WITHIN)


async def test_a_broker_that_answers_start_passes_and_is_left_at_once() -> None:
    async with listener(answers_start) as (port, received):
        assert await probe(port) is None
        with trio.fail_after(5):
            while len(received) < 2:
                await trio.sleep(0.01)
    assert received == [constants.PROTOCOL_HEADER, b""]


async def test_the_machines_rabbitmq_passes(system_broker: SystemBroker) -> None:
    assert await probe(SYSTEM_PORT) is None


async def test_a_closed_port_is_refused() -> None:
    port = free_port()
    assert await probe(port) == f"connect refused 127.0.0.1:{port}"


async def test_a_silent_listener_times_out() -> None:
    async with listener(says_nothing) as (port, received):
        assert await probe(port) == f"no Connection.Start from 127.0.0.1:{port} within 300 ms"
    assert received == [constants.PROTOCOL_HEADER]


async def test_a_listener_that_hangs_up() -> None:
    async with listener(hangs_up) as (port, _received):
        assert await probe(port) == (
            f"127.0.0.1:{port} closed the connection before Connection.Start"
        )


async def test_something_that_is_not_amqp() -> None:
    async with listener(speaks_http) as (port, _received):
        reason = await probe(port)
    assert reason is not None
    assert reason.startswith(f"127.0.0.1:{port} does not speak AMQP 0-9-1: ")


async def test_a_method_other_than_start() -> None:
    async with listener(answers_tune) as (port, _received):
        assert await probe(port) == (
            f"127.0.0.1:{port} answered with frame type 1 channel 0 method (10, 30) "
            "instead of Connection.Start"
        )


async def test_every_address_is_tried_until_one_passes() -> None:
    # localhost is ::1 and/or 127.0.0.1; only the IPv4 one listens.
    async with listener(answers_start) as (port, _received):
        assert await probe(port, "localhost") is None


async def test_every_failure_is_reported_when_none_passes() -> None:
    port = free_port()
    addresses = await Resolver().resolve("localhost", port)
    reason = await probe(port, "localhost")
    assert reason is not None
    assert reason.count("connect refused") == len(addresses)


@pytest.mark.parametrize("version", [1, 2])
async def test_a_send_proxy_backend_is_probed_with_a_header_naming_the_router(
    version: int,
) -> None:
    """Through the server's wrap hook, as a session connects: the PROXY header comes
    first, its source the probe's own socket (there is no client), its destination the
    backend; then the protocol header."""
    seen: list[tuple[ProxyHeader, tuple[str, int], bytes]] = []

    async def reads_proxy_header(stream: trio.SocketStream, received: list[bytes]) -> None:
        data = b""
        with trio.fail_after(5):
            while (parsed := parse(data)) is None:
                data += await stream.receive_some(1)
        peer = stream.socket.getpeername()
        seen.append((parsed.header, (peer[0], peer[1]), data[parsed.consumed :]))
        await answers_start(stream, received)

    server = Server(SessionSettings())
    async with listener(reads_proxy_header) as (port, received):
        backend = Backend("b", "dc", "127.0.0.1", port, send_proxy=version)
        assert await probe_backend(Resolver(), backend, WITHIN, wrap=server._probe_wrap) is None
    [(header, probe_socket, rest)] = seen
    assert header == ProxyHeader(version, probe_socket, ("127.0.0.1", port))
    assert rest == b"" and received[0] == constants.PROTOCOL_HEADER
