"""Session control with real clients and the machine's RabbitMQ.

A router process in simple mode in front of the system broker, driven with the real
``amqprouter_ctl``: pause and unpause with nothing lost or reordered, operator
disconnects that real client libraries recover from (pika with a reconnect loop,
aio-pika's ``connect_robust``), and the SIGTERM drain. Each test uses its own
vhost, so its sessions are found in CONN by vhost. The two-node vhost migration
lives with the other two-node tests in test_control_plane.py.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pika
import pika.exceptions
import pytest
from pamqp import commands, frame

from amqprouter.protocol import FrameReader, constants
from tests.brokers import SYSTEM_PORT, SystemBroker, wait_for
from tests.integration.test_control_plane import CtlResult, ctl
from tests.router import RouterProcess, running_router

WAIT = 15.0


@pytest.fixture(scope="module")
def router(system_broker: SystemBroker) -> Iterator[RouterProcess]:
    with running_router(SYSTEM_PORT) as started:
        yield started


def control(router: RouterProcess) -> Path:
    return router.stdout_path.parent / "control"


def must(router: RouterProcess, *words: str | int) -> str:
    result: CtlResult = ctl(control(router), *words)
    assert result.code == 0, f"{words}: {result}"
    return result.out


def session_ids(router: RouterProcess, vhost: str) -> list[int]:
    """Ids of the router's sessions for ``vhost``, from CONN."""
    return [
        int(match.group(1))
        for match in re.finditer(
            rf"^id=(\d+) vhost={re.escape(vhost)} ", must(router, "CONN"), re.M
        )
    ]


def one_session(router: RouterProcess, vhost: str) -> int:
    found: list[int] = []

    def look() -> bool:
        found[:] = session_ids(router, vhost)
        return len(found) == 1

    wait_for(look, WAIT, f"one session for vhost {vhost}")
    return found[0]


def params(router: RouterProcess, vhost: str, **kwargs: object) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        "127.0.0.1",
        router.port,
        virtual_host=vhost,
        connection_attempts=1,
        socket_timeout=5,
        stack_timeout=WAIT,
        **kwargs,
    )


def connect_with_retry(
    parameters: pika.ConnectionParameters, attempts: int = 20
) -> pika.BlockingConnection:
    """The reconnect loop an application runs: retry with a short pause."""
    for _ in range(attempts - 1):
        try:
            return pika.BlockingConnection(parameters)
        except pika.exceptions.AMQPConnectionError:
            time.sleep(0.2)
    return pika.BlockingConnection(parameters)


def round_trip(connection: pika.BlockingConnection, payload: bytes) -> None:
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("", queue, payload)
    body = None
    for _ in range(100):
        body = channel.basic_get(queue, auto_ack=True)[2]
        if body is not None:
            break
        connection.sleep(0.02)
    assert body == payload
    channel.close()


def queue_depth(broker: SystemBroker, vhost: str, queue: str) -> int:
    [found] = [q for q in broker.list_queues(vhost) if q["name"] == queue]
    return int(found["messages"])


# --------------------------------------------------------------------------- #
# pause and unpause
# --------------------------------------------------------------------------- #


def test_pause_unpause_loses_nothing_and_keeps_order(
    router: RouterProcess, system_broker: SystemBroker, system_vhost: str
) -> None:
    # Heartbeat 2 s: while paused the broker would drop a silent client after ~4 s.
    connection = pika.BlockingConnection(params(router, system_vhost, heartbeat=2))
    channel = connection.channel()
    channel.queue_declare("numbered")
    sid = one_session(router, system_vhost)

    assert must(router, "SESSION", sid, "PAUSE") == ""
    assert f"id={sid} " in must(router, "CONN") and " paused=Y " in must(router, "CONN")
    for number in range(500):
        channel.basic_publish("", "numbered", str(number).encode())
    connection.sleep(6)  # three heartbeat intervals, paused
    assert connection.is_open
    assert queue_depth(system_broker, system_vhost, "numbered") == 0  # held by the router

    assert must(router, "SESSION", sid, "UNPAUSE") == ""
    received: list[int] = []
    for _method, _properties, body in channel.consume(
        "numbered", auto_ack=True, inactivity_timeout=10
    ):
        assert body is not None, f"consumer starved after {len(received)}"
        received.append(int(body))
        if len(received) == 500:
            break
    assert received == list(range(500))
    assert connection.is_open
    connection.close()


def test_vhost_pause_holds_a_new_client_at_open_with_heartbeats(
    router: RouterProcess, system_vhost: str
) -> None:
    assert must(router, "VHOST", "PAUSE", system_vhost) == ""
    assert f"{system_vhost} = PAUSED\n" in must(router, "VHOST", "PRINT")
    with socket.create_connection(("127.0.0.1", router.port), timeout=10) as sock:
        reader = FrameReader(frame_max=1 << 20)

        def next_frame() -> bytes:
            while (item := reader.next_frame()) is None:
                data = sock.recv(65536)
                assert data, "router closed the held client"
                reader.feed(data)
            return item.raw

        sock.sendall(constants.PROTOCOL_HEADER)
        next_frame()  # Start
        sock.sendall(
            frame.marshal(
                commands.Connection.StartOk(
                    client_properties={}, mechanism="PLAIN", response="\0guest\0guest"
                ),
                0,
            )
        )
        next_frame()  # Tune
        sock.sendall(
            frame.marshal(commands.Connection.TuneOk(2047, 131072, 2), 0)
            + frame.marshal(commands.Connection.Open(system_vhost), 0)
        )
        started = time.monotonic()
        # Held: no broker yet, but the router heartbeats the client (every 1 s).
        assert next_frame() == b"\x08\x00\x00\x00\x00\x00\x00\xce"
        assert next_frame() == b"\x08\x00\x00\x00\x00\x00\x00\xce"
        assert time.monotonic() - started > 1.5
        [sid] = session_ids(router, system_vhost)
        assert f"id={sid} vhost={system_vhost} disconnected=N paused=Y " in must(router, "CONN")

        assert must(router, "VHOST", "UNPAUSE", system_vhost) == ""
        while (raw := next_frame())[0] == constants.FRAME_HEARTBEAT:
            pass
        assert isinstance(frame.unmarshal(raw)[2], commands.Connection.OpenOk)


# --------------------------------------------------------------------------- #
# disconnects, and the clients recovering from them
# --------------------------------------------------------------------------- #


def test_pika_sees_a_reset_on_force_disconnect_and_reconnects(
    router: RouterProcess, system_vhost: str
) -> None:
    connection = pika.BlockingConnection(params(router, system_vhost))
    sid = one_session(router, system_vhost)
    assert must(router, "SESSION", sid, "FORCE_DISCONNECT") == ""
    with pytest.raises(pika.exceptions.StreamLostError):
        connection.process_data_events(time_limit=5)
    recovered = connect_with_retry(params(router, system_vhost))
    round_trip(recovered, b"after a forced disconnect")
    assert session_ids(router, system_vhost) != [sid]
    recovered.close()


def test_pika_sees_our_320_on_graceful_disconnect_and_reconnects(
    router: RouterProcess, system_broker: SystemBroker, system_vhost: str
) -> None:
    connection = pika.BlockingConnection(params(router, system_vhost))
    sid = one_session(router, system_vhost)
    assert must(router, "SESSION", sid, "DISCONNECT_GRACEFUL") == ""
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as caught:
        connection.process_data_events(time_limit=5)
    assert (caught.value.reply_code, caught.value.reply_text) == (
        320,
        f"CONNECTION_FORCED - disconnected by operator (SESSION {sid} DISCONNECT_GRACEFUL)",
    )
    # The broker saw a clean close, not a dropped socket.
    wait_for(
        lambda: not [c for c in system_broker.list_connections() if c["vhost"] == system_vhost],
        WAIT,
        "the broker to forget the connection",
    )
    recovered = connect_with_retry(params(router, system_vhost))
    round_trip(recovered, b"after a graceful disconnect")
    recovered.close()


def test_aio_pika_robust_connection_recovers_from_both_disconnects(
    router: RouterProcess, system_vhost: str
) -> None:
    url = f"amqp://guest:guest@127.0.0.1:{router.port}/{system_vhost}"

    async def main() -> list[bytes]:
        connection = await aio_pika.connect_robust(url, timeout=10, reconnect_interval=0.2)
        reconnected = asyncio.Event()
        connection.reconnect_callbacks.add(lambda *_args: reconnected.set())
        got: list[bytes] = []
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue("robust", auto_delete=False)
            for action in ("FORCE_DISCONNECT", "DISCONNECT_GRACEFUL"):
                sid = await asyncio.to_thread(one_session, router, system_vhost)
                reconnected.clear()
                await asyncio.to_thread(must, router, "SESSION", sid, action)
                await asyncio.wait_for(reconnected.wait(), WAIT)
                await channel.default_exchange.publish(
                    aio_pika.Message(action.encode()), routing_key=queue.name
                )
                message = await queue.get(timeout=10)
                assert message is not None
                await message.ack()
                got.append(message.body)
            await queue.delete()
        return got

    assert asyncio.run(main()) == [b"FORCE_DISCONNECT", b"DISCONNECT_GRACEFUL"]


# --------------------------------------------------------------------------- #
# SIGTERM drains
# --------------------------------------------------------------------------- #


def test_sigterm_drains_sessions_gracefully_then_exits(system_vhost: str) -> None:
    with running_router(SYSTEM_PORT, extra=["--shutdown-timeout", "10"]) as router:
        connection = pika.BlockingConnection(params(router, system_vhost))
        started = time.monotonic()
        router.process.send_signal(signal.SIGTERM)
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as caught:
            connection.process_data_events(time_limit=5)
        assert (caught.value.reply_code, caught.value.reply_text) == (
            320,
            "CONNECTION_FORCED - router shutting down",
        )
        assert router.process.wait(WAIT) == 0
        assert time.monotonic() - started < 5
        assert "drained=1" in router.stderr and "cut_at_deadline=0" in router.stderr


def test_sigterm_cuts_a_silent_client_at_the_shutdown_deadline(system_vhost: str) -> None:
    extra = ["--shutdown-timeout", "1", "--disconnect-timeout", "30"]
    with running_router(SYSTEM_PORT, extra=extra) as router:
        # A pika connection nobody services: it never answers the router's Close.
        connection = pika.BlockingConnection(params(router, system_vhost))
        started = time.monotonic()
        router.process.send_signal(signal.SIGTERM)
        assert router.process.wait(WAIT) == 0
        assert 0.9 < time.monotonic() - started < 5
        assert "drained=0" in router.stderr and "cut_at_deadline=1" in router.stderr
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            connection.process_data_events(time_limit=5)


def test_exit_graceful_drains_then_exits(system_vhost: str) -> None:
    with running_router(SYSTEM_PORT) as router:
        connection = pika.BlockingConnection(params(router, system_vhost))
        assert must(router, "EXIT", "GRACEFUL", "5") == "Exiting.\n"
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker):
            connection.process_data_events(time_limit=5)
        assert router.process.wait(WAIT) == 0
        assert "drained=1" in router.stderr


def test_sigint_during_a_drain_stops_at_once(system_vhost: str) -> None:
    extra = ["--shutdown-timeout", "60", "--disconnect-timeout", "60"]
    with running_router(SYSTEM_PORT, extra=extra) as router:
        connection = pika.BlockingConnection(params(router, system_vhost))  # never answers
        router.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "draining" in router.stderr, WAIT, "the drain to start")
        started = time.monotonic()
        router.process.send_signal(signal.SIGINT)
        assert router.process.wait(WAIT) == 0
        assert time.monotonic() - started < 5
        assert "drained" not in router.stderr.replace("draining", "")
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            connection.process_data_events(time_limit=5)
