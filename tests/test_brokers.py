"""The broker test bed itself works: real RabbitMQ, pika directly, no router."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import pika
import pika.exceptions
import pytest

from tests.brokers import (
    HOST,
    BrokerError,
    RabbitNode,
    RabbitNodeFactory,
    SystemBroker,
    amqp_handshake_ok,
    free_port,
    port_is_open,
    unique_name,
    wait_for,
)


def _connect(broker: SystemBroker | RabbitNode, vhost: str, **props: Any) -> Any:
    params = pika.ConnectionParameters(
        host=broker.host,
        port=broker.port,
        virtual_host=vhost,
        credentials=pika.PlainCredentials("guest", "guest"),
        heartbeat=0,
        connection_attempts=1,
        socket_timeout=5,
        blocked_connection_timeout=5,
        client_properties=props or None,
    )
    return pika.BlockingConnection(params)


def test_free_port_never_hands_out_a_port_twice_in_a_row() -> None:
    # Picks made before any is bound are all free at once: they must still differ (a
    # router's plain and TLS ports once drew the same number).
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind((HOST, port))
    assert 1024 < port < 65536
    assert port not in {4369, 5672, 15672, 25672}


def test_system_broker_publish_and_get(system_broker: SystemBroker, system_vhost: str) -> None:
    assert amqp_handshake_ok(system_broker.port)
    conn = _connect(system_broker, system_vhost)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        queue = unique_name("q")
        ch.queue_declare(queue, exclusive=True)
        ch.basic_publish("", queue, b"hello system broker")
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        assert method is not None
        assert body == b"hello system broker"
    finally:
        conn.close()


def test_private_node_vhost_and_connections(rabbit_node: RabbitNode) -> None:
    vhost = unique_name("v")
    rabbit_node.add_vhost(vhost)
    assert vhost in rabbit_node.list_vhosts()
    conn_name = unique_name("conn")
    conn = _connect(rabbit_node, vhost, connection_name=conn_name)
    try:
        found: list[dict[str, Any]] = []

        def listed() -> bool:
            found[:] = [
                c
                for c in rabbit_node.list_connections()
                if c["client_properties"].get("connection_name") == conn_name
            ]
            return bool(found)

        wait_for(listed, timeout=10, what="the pika connection in list_connections")
        (info,) = found
        assert info["vhost"] == vhost
        assert info["user"] == "guest"
        assert info["port"] == rabbit_node.port
        assert info["peer_host"] == HOST
        assert isinstance(info["peer_port"], int)
        assert info["client_properties"]["product"] == "Pika Python Client Library"

        rabbit_node.close_all_connections("test says bye")
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            for _ in range(50):
                conn.process_data_events(time_limit=0.1)
    finally:
        if conn.is_open:
            conn.close()
    rabbit_node.delete_vhost(vhost)
    assert vhost not in rabbit_node.list_vhosts()


def test_kill_drops_clients_then_restarts_on_same_port_keeping_durable_queues(
    rabbit_node: RabbitNode,
) -> None:
    port = rabbit_node.port
    conn = _connect(rabbit_node, "/")
    conn.channel()

    rabbit_node.kill()
    assert not port_is_open(port)
    started = time.monotonic()
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        while time.monotonic() - started < 5:
            conn.process_data_events(time_limit=0.1)
    assert time.monotonic() - started < 5
    assert not conn.is_open

    rabbit_node.restart()
    assert rabbit_node.port == port
    conn = _connect(rabbit_node, "/")
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("durable-q", durable=True)
        ch.basic_publish("", "durable-q", b"persistent", pika.BasicProperties(delivery_mode=2))
    finally:
        conn.close()

    # Graceful restart: durable queues and persistent messages survive.  (After
    # kill() only what RabbitMQ had already flushed survives, as in a real
    # crash: a queue declared a moment before the SIGKILL can be lost.)
    rabbit_node.restart()
    assert rabbit_node.port == port
    assert {"name": "durable-q", "durable": True, "messages": 1, "consumers": 0} in (
        rabbit_node.list_queues("/")
    )
    conn = _connect(rabbit_node, "/")
    try:
        method, _props, body = conn.channel().basic_get("durable-q", auto_ack=True)
        assert method is not None
        assert body == b"persistent"
    finally:
        conn.close()

    rabbit_node.stop()
    assert not port_is_open(port)
    assert not rabbit_node.is_running()


def test_factory_names_are_unique(rabbit_node_factory: RabbitNodeFactory) -> None:
    a = rabbit_node_factory(start=False)
    b = rabbit_node_factory(start=False)
    assert a.name != b.name
    assert f"-{os.getpid()}-" in a.name
    assert len({a.port, a.dist_port, b.port, b.dist_port}) == 4
    assert not a.is_running()


def test_start_failure_reports_logs(rabbit_node_factory: RabbitNodeFactory) -> None:
    node = rabbit_node_factory(start=False)
    node.data_dir.mkdir(parents=True)
    # An unparsable advanced.config makes the node exit during boot.
    (node.data_dir / "advanced.config").write_text("this is not erlang")
    with pytest.raises(BrokerError, match=r"failed to start[\s\S]*---"):
        node.start(timeout=30)
    assert not node.is_running()
