"""LIMIT end to end: a router process configured with ``amqprouter_ctl`` in front of the
machine's RabbitMQ, real pika clients, every byte checked at the broker's side."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pika
import pika.exceptions
import pytest

from tests.brokers import SYSTEM_PORT, wait_for
from tests.integration.test_control_plane import (
    WAIT,
    ControlledRouter,
    client,
    log_lines,
    refusal,
    running_router,
)

RATE_LIMITED = "The connection for {}, is limited by proxy."


@pytest.fixture
def router(system_vhost: str) -> Iterator[ControlledRouter]:
    """A router whose only backend is the machine's broker, ``system_vhost`` mapped to it."""
    workdir = Path(tempfile.mkdtemp(prefix="amqprouter-lim-"))
    try:
        with running_router(workdir / "control") as started:
            started.must("BACKEND ADD local dc1 127.0.0.1", SYSTEM_PORT)
            started.must("MAP BACKEND", system_vhost, "local")
            started.listen()
            yield started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _attempt(port: int, vhost: str, name: str) -> pika.BlockingConnection | tuple[int, str]:
    """A connection, or the (code, text) of the Close that refused it."""
    try:
        return client(port, vhost, name)
    except pika.exceptions.AMQPConnectionError as exc:
        with pytest.raises(pika.exceptions.AMQPConnectionError) as caught:
            raise exc
        return refusal(caught)


def test_conn_rate_serves_the_limit_and_refuses_the_rest_after_750ms(
    router: ControlledRouter, system_vhost: str
) -> None:
    assert router.must("LIMIT CONN_RATE VHOST", system_vhost, 2) == (
        f"For vhost {system_vhost}, Allow average 2 number of connections per 1 seconds\n"
    )
    started = time.monotonic()
    with ThreadPoolExecutor(5) as pool:
        results = list(
            pool.map(lambda i: _attempt(router.port, system_vhost, f"rate-{i}"), range(5))
        )
    took = time.monotonic() - started
    served = [r for r in results if isinstance(r, pika.BlockingConnection)]
    refused = [r for r in results if not isinstance(r, pika.BlockingConnection)]
    try:
        assert len(served) == 2, results
        assert refused == [(506, RATE_LIMITED.format(system_vhost))] * 3
        assert took >= 0.75  # the refusals come after amqpprox's delay
        for connection in served:
            channel = connection.channel()
            channel.queue_declare("", exclusive=True)
    finally:
        for connection in served:
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()
    # A second later the window has room again.
    time.sleep(1.0)
    connection = client(router.port, system_vhost, "rate-later")
    connection.close()


def test_connections_limit(router: ControlledRouter, system_vhost: str) -> None:
    router.must("LIMIT CONNECTIONS VHOST", system_vhost, 1)
    first = client(router.port, system_vhost, "first")
    with pytest.raises(pika.exceptions.AMQPConnectionError) as caught:
        client(router.port, system_vhost, "second")
    assert refusal(caught) == (
        506,
        f"The connection for {system_vhost}, is limited by proxy: at most 1 concurrent "
        "connections.",
    )
    first.close()

    def admitted() -> bool:
        try:
            client(router.port, system_vhost, "third").close()
        except pika.exceptions.AMQPConnectionError:
            return False
        return True

    wait_for(admitted, WAIT, "the place the first connection held to be free")


def test_alarm_only_logs(router: ControlledRouter, system_vhost: str) -> None:
    router.must("LIMIT CONN_RATE_ALARM VHOST", system_vhost, 0)
    client(router.port, system_vhost, "alarmed").close()
    (line,) = log_lines(router, "AMQPROUTER_CONNECTION_LIMIT: The connection request")
    assert (
        f"AMQPROUTER_CONNECTION_LIMIT: The connection request for {system_vhost} should be "
        "limited by Allow average 0 number of connections per 1 seconds"
    ) in line
    assert "level='warning'" in line


def test_data_rate_holds_the_publisher_back_and_loses_nothing(
    router: ControlledRouter, system_vhost: str
) -> None:
    router.must("LIMIT DATA_RATE VHOST", system_vhost, 100_000)
    connection = client(router.port, system_vhost, "publisher")
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        queue = channel.queue_declare("", exclusive=True).method.queue
        bodies = [bytes([n]) * 100_000 for n in range(10)]  # 1 MB
        started = time.monotonic()
        for body in bodies:
            channel.basic_publish("", queue, body)  # returns once the broker confirmed
        took = time.monotonic() - started
        assert 7.0 <= took <= 14.0, took
        received = []
        for _ in bodies:
            _method, _properties, body = channel.basic_get(queue, auto_ack=True)
            received.append(body)
        assert received == bodies
    finally:
        with contextlib.suppress(pika.exceptions.AMQPError):
            connection.close()


def test_limit_print_and_config_print_round_trip(
    router: ControlledRouter, system_vhost: str
) -> None:
    for line in (
        "LIMIT CONN_RATE DEFAULT 50",
        f"LIMIT CONN_RATE_ALARM VHOST {system_vhost} 7",
        "LIMIT DATA_RATE DEFAULT 1000000",
        f"LIMIT CONNECTIONS VHOST {system_vhost} 9",
    ):
        router.must(line)
    assert router.must("LIMIT PRINT", system_vhost) == (
        f"Alarm only limit, for vhost {system_vhost}, Allow average 7 number of connections "
        "per 1 seconds.\n"
        f"For vhost {system_vhost}, allow average 50 number of connections per second.\n"
        f"For vhost {system_vhost}, allow max 1000000 bytes per second.\n"
        f"For vhost {system_vhost}, allow at most 9 concurrent connections.\n"
    )
    printed = router.must("CONFIG PRINT")
    limits = [line for line in printed.splitlines() if line.startswith("LIMIT")]
    assert limits == [
        "LIMIT CONN_RATE DEFAULT 50",
        f"LIMIT CONN_RATE_ALARM VHOST {system_vhost} 7",
        "LIMIT DATA_RATE DEFAULT 1000000",
        f"LIMIT CONNECTIONS VHOST {system_vhost} 9",
    ]
    workdir = Path(tempfile.mkdtemp(prefix="amqprouter-lim-"))
    try:
        config = workdir / "saved.conf"
        # The listener's port is taken by the first router: restore the rest.
        config.write_text(
            "".join(line + "\n" for line in printed.splitlines() if "LISTEN" not in line)
        )
        with running_router(workdir / "control", "--config", str(config)) as second:
            assert second.must("LIMIT PRINT") == router.must("LIMIT PRINT")
            assert second.must("LIMIT PRINT", system_vhost) == router.must(
                "LIMIT PRINT", system_vhost
            )
            again = second.must("CONFIG PRINT")
        assert [line for line in again.splitlines() if line.startswith("LIMIT")] == limits
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
