"""The controller against an in-process server: CONN lines and MAPHOSTNAME DNS."""

from __future__ import annotations

import re

import trio
from pamqp import commands

from amqprouter.control.controller import Controller
from amqprouter.protocol import constants
from tests.session.wire import (
    connect_client_side,
    fake_broker,
    open_and_idle,
    open_client,
    router,
)

CONN_LINE = re.compile(
    r"id=(\d+) vhost=/ disconnected=N paused=N authDenied=N "
    r"ingressRemote=(\S+):(\d+) ingressLocal=(\S+) egressLocal=(\S+):(\d+) "
    r"egressRemote=(\S+):(\d+) inBytes=(\d+) inFrames=(\d+) inPackets=(\d+) "
    r"outBytes=(\d+) outFrames=(\d+) outPackets=(\d+) (\d+\.\d+):(\d+\.\d+)"
    # Ours after amqpprox's fields (tests/control/test_conn_who.py checks them): where
    # routing sent it, then who the client is.
    r" backend=fake mapping=\(default\) rule=- "
    r"user=\"guest\" connectionName=\"wire-test\" [^\n]*\n"
)


async def test_conn_lines_and_hostname_mapping() -> None:
    async with fake_broker(open_and_idle) as broker, router(broker.port) as (server, port):
        controller = Controller(server, request_exit=lambda: None)
        client = await open_client(port)
        reply = await controller.handle("CONN")
        match = CONN_LINE.fullmatch(reply.text)
        assert match is not None, reply.text
        assert match.group(2) == "127.0.0.1"
        assert match.group(7) == "127.0.0.1" and int(match.group(8)) == broker.port
        assert int(match.group(13)) == 1  # the broker's Open-Ok went out
        assert float(match.group(15)) < 5

        mapped = await controller.handle("MAPHOSTNAME DNS")
        assert mapped.text == "Hostname mapper set for all current sessions.\n"
        # Names are looked up in the background: the first CONN may still show
        # addresses, never waits, and a later one shows the name from /etc/hosts.
        with trio.fail_after(5):
            while "ingressRemote=localhost:" not in (await controller.handle("CONN")).text:
                await trio.sleep(0.05)
        text = (await controller.handle("CONN")).text
        assert f"egressRemote=localhost:{broker.port}" in text
        await client.aclose()


async def test_conn_brackets_an_ipv6_client_and_keeps_ipv4_as_amqpprox() -> None:
    async with fake_broker(open_and_idle) as broker, router(broker.port) as (server, _port):
        port6 = await server.listen(0, "::1")
        controller = Controller(server, request_exit=lambda: None)
        stream = await trio.open_tcp_stream("::1", port6)
        client_port = stream.socket.getsockname()[1]
        client = connect_client_side(stream)
        await client.send(constants.PROTOCOL_HEADER)
        assert isinstance(await client.read_method(), commands.Connection.Start)
        await client.send_method(
            commands.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest")
        )
        assert isinstance(await client.read_method(), commands.Connection.Tune)
        await client.send_method(commands.Connection.TuneOk(frame_max=131072))
        await client.send_method(commands.Connection.Open(virtual_host="/"))
        assert isinstance(await client.read_method(), commands.Connection.OpenOk)
        text = (await controller.handle("CONN")).text
        # Host and port can be told apart: '[::1]:4242', never '::1:4242'...
        assert f" ingressRemote=[::1]:{client_port} ingressLocal=::1 " in text, text
        # ...while the IPv4 side keeps the reference's format.
        assert f" egressRemote=127.0.0.1:{broker.port} " in text, text
        assert re.search(r" egressLocal=127\.0\.0\.1:\d+ ", text), text
        await client.aclose()
