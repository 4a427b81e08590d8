"""The drain (SIGTERM, EXIT GRACEFUL) counts and names the clients it cut.

A client that never answers the router's Close is cut at ``--disconnect-timeout``,
before the drain's deadline: it must be counted as cut (not as drained) and named in
the ``drained`` log line. In process with scripted clients, then as users run it
(SIGTERM to ``python -m amqprouter``) with pika clients.
"""

from __future__ import annotations

import signal
import threading
import time

import pika
import pika.exceptions
import pytest
import structlog.testing
import trio
from pamqp import commands

from amqprouter.server.drain import Drained
from amqprouter.session import Timeouts
from tests.brokers import SYSTEM_PORT, SystemBroker
from tests.router import running_router
from tests.session.wire import Peer, client_handshake, router

WAIT = 10.0


async def _answer_close(peer: Peer) -> None:
    assert isinstance(await peer.read_method(), commands.Connection.Close)
    await peer.send_method(commands.Connection.CloseOk())


async def test_a_client_that_does_not_answer_close_is_counted_and_named(
    system_broker: SystemBroker,
) -> None:
    timeouts = Timeouts(
        client_handshake=2.0, connect=2.0, broker_handshake=2.0, close=0.5, disconnect=0.3
    )
    async with router(system_broker.port, timeouts=timeouts) as (server, port):
        polite = await client_handshake(port)
        assert isinstance(await polite.read_method(), commands.Connection.OpenOk)
        mute = await client_handshake(port)
        assert isinstance(await mute.read_method(), commands.Connection.OpenOk)
        mute_session = max(server.sessions.values(), key=lambda s: s.id)
        outcome: list[Drained] = []
        started = trio.current_time()
        with structlog.testing.capture_logs() as logs:
            async with trio.open_nursery() as nursery:

                async def drain() -> None:
                    outcome.append(await server.drain(WAIT))

                nursery.start_soon(drain)
                nursery.start_soon(_answer_close, polite)
        # Over at the disconnect timeout (and the broker's close), long before the deadline.
        assert trio.current_time() - started < 3
        assert outcome == [Drained(drained=1, cut_unanswered=1, cut_at_deadline=0)]
        (line,) = [entry for entry in logs if entry["event"] == "drained"]
        assert (line["drained"], line["cut_at_disconnect_timeout"], line["cut_at_deadline"]) == (
            1,
            1,
            0,
        )
        mute_port = mute_session.client_address[1]
        assert line["cut"] == [
            f"session={mute_session.id} client=127.0.0.1:{mute_port} vhost=/ "
            "connection_name=wire-test why=no Close-Ok within 0.3s"
        ]
        assert any(e["event"] == "client cut: it did not answer Close" for e in logs)


async def test_a_drain_where_everyone_answers_names_nobody(system_broker: SystemBroker) -> None:
    async with router(system_broker.port) as (server, port):
        polite = await client_handshake(port)
        assert isinstance(await polite.read_method(), commands.Connection.OpenOk)
        with structlog.testing.capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_answer_close, polite)
                assert await server.drain(WAIT) == Drained(1, 0, 0)
        (line,) = [entry for entry in logs if entry["event"] == "drained"]
        assert "cut" not in line


def test_sigterm_logs_the_client_cut_at_the_disconnect_timeout(system_vhost: str) -> None:
    extra = ["--shutdown-timeout", "10", "--disconnect-timeout", "0.5"]
    with running_router(SYSTEM_PORT, extra=extra) as router_process:

        def connect(name: str) -> pika.BlockingConnection:
            return pika.BlockingConnection(
                pika.ConnectionParameters(
                    "127.0.0.1",
                    router_process.port,
                    virtual_host=system_vhost,
                    client_properties={"connection_name": name},
                    connection_attempts=1,
                    socket_timeout=5,
                )
            )

        mute = connect("never answers")  # nobody services it: it never answers the Close
        closed: list[int] = []

        def serviced() -> None:
            polite = connect("answers")
            try:
                while polite.is_open:
                    polite.process_data_events(0.05)
            except pika.exceptions.ConnectionClosedByBroker as exc:
                closed.append(exc.reply_code)

        thread = threading.Thread(target=serviced)
        thread.start()
        time.sleep(0.5)  # both connected
        router_process.process.send_signal(signal.SIGTERM)
        assert router_process.process.wait(WAIT) == 0
        thread.join(WAIT)
        assert closed == [320]
        stderr = router_process.stderr
        assert "drained=1" in stderr and "cut_at_disconnect_timeout=1" in stderr, stderr[-3000:]
        assert "cut_at_deadline=0" in stderr
        assert "connection_name=never answers why=no Close-Ok within 0.5s" in stderr
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            mute.process_data_events(time_limit=5)  # told 320, then cut
