"""STAT over a real control socket, in process: streaming replies, StatsD over real UDP.

The router runs in this process in front of the real broker (tests/session/wire.py);
the control socket and the StatsD receiver are real sockets.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import trio

from amqprouter.app import start_stats
from amqprouter.control.controller import Controller
from amqprouter.control.socket_server import STATUS_HELLO, serve_control
from amqprouter.observe.service import StatsService
from amqprouter.server import Server
from tests.brokers import SystemBroker
from tests.session.wire import WAIT, open_client, router

INTERVAL = 0.05
HELLO = STATUS_HELLO.encode() + b"\n"


@asynccontextmanager
async def controlled(
    broker_port: int, path: Path
) -> AsyncIterator[tuple[Server, StatsService, Controller]]:
    async with router(broker_port) as (server, _port), trio.open_nursery() as nursery:
        stats = await start_stats(nursery, server, interval=INTERVAL)
        controller = Controller(server, request_exit=lambda: None, stats=stats)
        await nursery.start(partial(serve_control, path, controller.handle))
        yield server, stats, controller
        nursery.cancel_scope.cancel()


class Lines:
    """Reads a control connection's reply line by line."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream, self.buffer = stream, b""

    async def read_until(self, marker: bytes) -> bytes:
        with trio.fail_after(WAIT):
            while marker not in self.buffer:
                data = await self.stream.receive_some(65536)
                assert data, f"EOF before {marker!r}: {self.buffer!r}"
                self.buffer += data
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    async def line(self) -> bytes:
        return await self.read_until(b"\n")


async def ask(path: Path, line: str) -> bytes:
    async with await trio.open_unix_socket(str(path)) as stream:
        await stream.send_all(HELLO + line.encode() + b"\n")
        reply = b""
        with trio.fail_after(WAIT):
            while data := await stream.receive_some(65536):
                reply += data
        return reply


async def wait_listeners(stats: StatsService, count: int) -> None:
    with trio.fail_after(WAIT):
        while stats.listener_count != count:
            await trio.sleep(0.01)


async def test_stat_listen_streams_each_interval_until_the_client_leaves(
    system_broker: SystemBroker, tmp_path: Path
) -> None:
    path = tmp_path / "ctl"
    async with controlled(system_broker.port, path) as (server, stats, _controller):
        client = await open_client(next(iter(server.listeners)))
        stream = await trio.open_unix_socket(str(path))
        await stream.send_all(HELLO + b"STAT LISTEN json overall\n")
        lines = Lines(stream)
        assert await lines.read_until(b"\0S") == b"", "streaming status comes first"
        chunks = [json.loads(await lines.line()) for _ in range(3)]
        assert all(chunk["activeConnectionCount"] == 1 for chunk in chunks)
        assert stats.listener_count == 1
        await stream.aclose()  # Ctrl-C in amqprouter_ctl
        await wait_listeners(stats, 0)
        await client.aclose()


async def test_stat_listen_human_vhost_and_errors_over_the_socket(
    system_broker: SystemBroker, tmp_path: Path
) -> None:
    path = tmp_path / "ctl"
    async with controlled(system_broker.port, path) as (server, stats, _controller):
        client = await open_client(next(iter(server.listeners)))
        async with await trio.open_unix_socket(str(path)) as stream:
            await stream.send_all(HELLO + b"STAT LISTEN human vhost=/\n")
            lines = Lines(stream)
            await lines.read_until(b"\0S")
            assert (await lines.line()).startswith(b"Paused: 0 Active: 1 Auth denied: 0 ")
        assert await ask(path, "STAT LISTEN xml") == (
            b"json or human must be the type of output\n\x001"
        )
        assert await ask(path, "STAT LISTEN json color=red") == (
            b"Unknown filter type: 'COLOR'; valid filters: all, all-except-per-source, overall, "
            b"process, bufferpool, vhost=<vhost>, backend=<backend>, source=<host>.\n\x001"
        )
        assert await ask(path, "STAT DISABLE per-source") == b"DISABLE per-source applied.\n\x000"
        assert not stats.collector.per_source
        await client.aclose()
        await wait_listeners(stats, 0)


async def test_stat_send_publishes_statsd_lines_over_udp(
    system_broker: SystemBroker, tmp_path: Path
) -> None:
    path = tmp_path / "ctl"
    receiver = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await receiver.bind(("127.0.0.1", 0))
    port = receiver.getsockname()[1]
    async with controlled(system_broker.port, path) as (server, stats, _controller):
        client = await open_client(next(iter(server.listeners)))
        assert await ask(path, f"STAT SEND 127.0.0.1 {port}") == (
            f"Sending stats on 127.0.0.1:{port}\n\x000".encode()
        )
        wanted = {
            b"amqprouter.activeConnectionCount,rmqEndpointType=overall:1|g",
            b"amqprouter.activeConnectionCount,rmqEndpointType=vhost,rmqVhostName=/:1|g",
            b"amqprouter.activeConnectionCount,rmqEndpointType=sources,"
            b"rmqEndpointHostname=127.0.0.1:1|g",
            b"amqprouter.activeConnectionCount,rmqEndpointType=backends,"
            + f"rmqEndpointHostname=127.0.0.1_{system_broker.port}:1|g".encode(),
        }
        seen: set[bytes] = set()
        with trio.fail_after(WAIT):
            # The process gauges end each interval's datagrams.
            while not wanted <= seen or not any(b".mem_rss_kb:" in line for line in seen):
                seen.add(await receiver.recv(65536))
        assert any(re.fullmatch(rb"amqprouter\.mem_rss_kb:[1-9][0-9]*\|g", x) for x in seen)
        assert all(line.endswith((b"|g", b"|c")) for line in seen)
        assert await ask(path, "STAT STOP SEND") == b"Stopped sending stats.\n\x000"
        assert stats.publishers == []
        await client.aclose()
    receiver.close()


async def test_stat_send_to_an_unresolvable_host_is_an_error_not_a_dead_loop(
    system_broker: SystemBroker, tmp_path: Path
) -> None:
    path = tmp_path / "ctl"
    async with controlled(system_broker.port, path) as (_server, stats, _controller):
        reply = await ask(path, "STAT SEND no-such-host.invalid 8125")
        assert reply.startswith(b"Failed to resolve 'no-such-host.invalid', error code: ")
        assert reply.endswith(b"\n\x001")
        assert stats.publishers == []
        assert await ask(path, "STAT STOP SEND") == b"Stopped sending stats.\n\x000"


async def test_udp_errors_never_break_collection(
    system_broker: SystemBroker, tmp_path: Path
) -> None:
    # Nobody listens on this port: each datagram earns an ICMP port-unreachable,
    # which the next sendto reports as ECONNREFUSED on some systems.
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    path = tmp_path / "ctl"
    async with controlled(system_broker.port, path) as (_server, stats, _controller):
        assert (await ask(path, f"STAT SEND 127.0.0.1 {port}")).endswith(b"\x000")
        async with await trio.open_unix_socket(str(path)) as stream:
            await stream.send_all(HELLO + b"STAT LISTEN json process\n")
            lines = Lines(stream)
            await lines.read_until(b"\0S")
            for _ in range(3):
                assert json.loads(await lines.line())["mem_rss_kb"] > 0
        assert len(stats.publishers) == 1


async def test_config_print_writes_back_stat_send_and_per_source(
    system_broker: SystemBroker, tmp_path: Path
) -> None:
    async with controlled(system_broker.port, tmp_path / "ctl") as (_server, _stats, controller):
        for line in ("STAT SEND localhost 8125", "STAT DISABLE per-source"):
            assert (await controller.handle(line)).ok, line
        config = (await controller.handle("CONFIG PRINT")).text
        assert "STAT SEND localhost 8125\nSTAT DISABLE per-source\n" in config
        for line in ("STAT STOP SEND", "STAT ENABLE per-source"):
            assert (await controller.handle(line)).ok, line
        assert "STAT" not in (await controller.handle("CONFIG PRINT")).text
