"""Passive health through real sessions: a farm of a closed port and a fake broker."""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import structlog.testing
import trio
import trio.testing
from pamqp import commands

from amqprouter.control.controller import Controller
from amqprouter.routing import Backend, Farm, RoutingTable
from amqprouter.server import Server
from tests.brokers import free_port
from tests.session.wire import (
    fake_broker,
    open_and_idle,
    router,
    wait_no_sessions,
)
from tests.session.wire import open_client as open_wire_client


def farm_router(*ports: int) -> AbstractAsyncContextManager[tuple[Server, int]]:
    """An in-process router whose default farm is one backend per port, in order."""
    names = [f"n{index}" for index in range(1, len(ports) + 1)]
    pairs = zip(names, ports, strict=True)
    backends = {name: Backend(name, "dc", "127.0.0.1", port) for name, port in pairs}
    farm = Farm("f", "round-robin", tuple(names))
    return router(
        None, routing=RoutingTable(backends=backends, farms={"f": farm}, default_farm="f")
    )


def connect_failures(logs: list[MutableMapping[str, Any]]) -> list[object]:
    return [entry.get("address") for entry in logs if entry["event"] == "broker connect failed"]


async def test_a_refusing_member_is_tried_last_until_its_down_time_ends() -> None:
    dead = free_port()
    async with (
        fake_broker(open_and_idle) as broker,
        farm_router(dead, broker.port) as (server, port),
    ):
        with structlog.testing.capture_logs() as logs:
            await open_wire_client(port)  # round-robin starts at n1: refused, then n2
        assert connect_failures(logs) == [f"127.0.0.1:{dead}"]
        assert server.health.registry.down() == {"n1"}
        assert [e["event"] for e in logs if e.get("backend") == "n1"] == ["backend down"]

        with structlog.testing.capture_logs() as logs:
            for _ in range(4):  # n1's turn comes twice: it is not tried either time
                await open_wire_client(port)
        assert connect_failures(logs) == []
        assert len(broker.accepted) == 5

        controller = Controller(server, request_exit=lambda: None)
        text = (await controller.handle("BACKEND PRINT")).text
        assert re.fullmatch(
            rf"n1 \(dc\): 127\.0\.0\.1 :{dead} DOWN \(connect failed: 127\.0\.0\.1:{dead}: "
            r"Connection refused, \d+\.\ds left\)\n"
            rf"n2 \(dc\): 127\.0\.0\.1 :{broker.port}\n",
            text,
        ), text


async def test_when_every_member_is_down_they_are_all_tried_anyway() -> None:
    async with (
        fake_broker(open_and_idle) as broker,
        farm_router(free_port(), broker.port) as (server, port),
    ):
        server.health.registry.connect_failed("n1", "earlier")
        server.health.registry.connect_failed("n2", "earlier")
        await open_wire_client(port)
        # n2 answered, so it is up again; n1 (refused again) stays down.
        assert server.health.registry.down() == {"n1"}


async def test_a_member_that_comes_back_is_used_once_its_down_time_is_over(
    mock_clock: trio.testing.MockClock,
) -> None:
    # Time stands still (rate 0) unless the test moves it: the down time runs out when
    # the clock is jumped past it, not after a real sleep.
    async with (
        fake_broker(open_and_idle) as first,
        fake_broker(open_and_idle) as second,
        farm_router(first.port, second.port) as (server, port),
    ):
        server.health.registry.down_seconds = 0.2
        server.health.registry.connect_failed("n1", "it was restarting")
        for _ in range(2):
            await open_wire_client(port)
        assert (len(first.accepted), len(second.accepted)) == (0, 2)
        mock_clock.jump(0.1)
        await open_wire_client(port)  # still down
        assert (len(first.accepted), len(second.accepted)) == (0, 3)
        mock_clock.jump(0.15)
        for _ in range(2):
            await open_wire_client(port)
        assert (len(first.accepted), len(second.accepted)) == (1, 4)


async def test_a_member_going_down_disconnects_its_sessions_when_the_farm_says_so() -> None:
    """FARM ON_DOWN DISCONNECT with the real disconnect: the client gets a 320 naming why.

    The check's probe is scripted (the member's fake broker stays up), so only the
    health verdict, not a broken connection, can end the session.
    """

    async def probe(backend: Backend, timeout: float) -> str | None:
        return verdicts.get(backend.name)

    verdicts: dict[str, str] = {}
    async with (
        fake_broker(open_and_idle) as first,
        fake_broker(open_and_idle) as second,
        farm_router(first.port, second.port) as (server, port),
    ):
        server.health.probe = probe
        controller = Controller(server, request_exit=lambda: None)
        for line in ("BACKEND CHECK n1 ON 100 1 1", "FARM ON_DOWN f DISCONNECT"):
            assert (await controller.handle(line)).ok, line
        client = await open_wire_client(port)  # round-robin starts at n1
        assert (len(first.accepted), len(second.accepted)) == (1, 0)

        verdicts["n1"] = "connect refused 127.0.0.1:1"
        close = await client.read_method()
        assert isinstance(close, commands.Connection.Close)
        assert close.reply_code == 320
        assert close.reply_text.startswith("CONNECTION_FORCED - backend n1 is down"), close
        await client.send_method(commands.Connection.CloseOk())
        assert await client.at_eof()
        await wait_no_sessions(server)

        # The client reconnects and lands on the healthy member.
        await open_wire_client(port)
        assert (len(first.accepted), len(second.accepted)) == (1, 1)
