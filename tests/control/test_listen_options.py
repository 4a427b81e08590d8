"""LISTEN START with ACCEPT-PROXY FROM and ALLOW through the controller: the listener's
options are kept, written back by CONFIG PRINT, and not silently changed."""

from __future__ import annotations

import trio

from amqprouter.control.controller import Controller
from amqprouter.server import Server
from amqprouter.server.admission import ListenOptions
from amqprouter.session import SessionSettings
from tests.brokers import free_port


async def test_listen_options_are_kept_printed_and_not_silently_changed() -> None:
    server = Server(SessionSettings())
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        controller = Controller(server, request_exit=lambda: None)
        port = free_port()
        line = f"LISTEN START {port} ACCEPT-PROXY FROM 127.0.0.2/32 ALLOW 127.0.0.0/8,::1/128"
        assert (
            await controller.handle(
                f"listen start {port} allow 127.0.0.0/8,::1 accept-proxy from 127.0.0.2"
            )
        ).ok
        assert server.listen_options[port] == ListenOptions(
            ("127.0.0.2/32",), ("127.0.0.0/8", "::1/128")
        )
        assert f"\n{line}\n" in controller.config_text()
        again = await controller.handle(line)
        assert again.ok and again.text == ""
        # Another set of balancers is another listener too.
        balancers = await controller.handle(
            f"LISTEN START {port} ACCEPT-PROXY FROM 127.0.0.3 ALLOW 127.0.0.0/8,::1"
        )
        assert not balancers.ok and "it is already listening as" in balancers.text
        changed = await controller.handle(f"LISTEN START {port}")
        assert not changed.ok
        assert changed.text == (
            f"Cannot listen on port {port}: it is already listening as '{line}'; "
            "LISTEN STOP it first\n"
        )
        assert (await controller.handle(f"LISTEN STOP {port}")).ok
        assert port not in server.listen_options
        assert "LISTEN" not in controller.config_text()
        nursery.cancel_scope.cancel()
