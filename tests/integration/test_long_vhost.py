"""A vhost name over pamqp's 127 characters, through a router to the machine's RabbitMQ.

pamqp refuses to write ``Connection.Open`` for such a name; RabbitMQ accepts any short
string. The router used to drop the client with a bare EOF.
"""

from __future__ import annotations

from collections.abc import Iterator

import pika
import pytest

from tests.brokers import SYSTEM_PORT, SystemBroker, unique_name
from tests.router import RouterProcess, running_router


@pytest.fixture
def long_vhost(system_broker: SystemBroker) -> Iterator[str]:
    name = unique_name("amqprt-long-vhost-")
    name += "v" * (130 - len(name))
    assert len(name) == 130
    system_broker.add_vhost(name)
    yield name
    system_broker.delete_vhost(name)


@pytest.fixture
def router() -> Iterator[RouterProcess]:
    with running_router(SYSTEM_PORT) as running:
        yield running


def test_130_character_vhost_publish_and_get(
    long_vhost: str, router: RouterProcess, system_broker: SystemBroker
) -> None:
    connection = pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", router.port, virtual_host=long_vhost)
    )
    try:
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.basic_publish("", queue, b"through a long vhost")
        _method, _properties, body = channel.basic_get(queue, auto_ack=True)
        assert body == b"through a long vhost"
        # The broker saw the connection in that vhost, not some other one.
        vhosts = {c["vhost"] for c in system_broker.list_connections()}
        assert long_vhost in vhosts
    finally:
        connection.close()
