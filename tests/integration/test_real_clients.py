"""Real client libraries through the router to the machine's RabbitMQ."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aio_pika
import pika
import pika.exceptions
import pytest

from tests.brokers import SystemBroker, unique_name, wait_for
from tests.router import RouterProcess


def _params(router: RouterProcess, **kwargs: object) -> pika.ConnectionParameters:
    return pika.ConnectionParameters("127.0.0.1", router.port, **kwargs)


def test_publish_and_consume_1000_in_order(system_router: RouterProcess) -> None:
    connection = pika.BlockingConnection(_params(system_router))
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    for number in range(1000):
        channel.basic_publish("", queue, str(number).encode())
    received: list[int] = []
    for _method, _properties, body in channel.consume(queue, auto_ack=True, inactivity_timeout=5):
        assert body is not None, "consumer starved"
        received.append(int(body))
        if len(received) == 1000:
            break
    assert received == list(range(1000))
    connection.close()


def test_publisher_confirms(system_router: RouterProcess) -> None:
    connection = pika.BlockingConnection(_params(system_router))
    channel = connection.channel()
    channel.confirm_delivery()
    queue = channel.queue_declare("", exclusive=True).method.queue
    for number in range(200):
        # With confirms on, basic_publish returns only once the broker acked it.
        channel.basic_publish("", queue, str(number).encode(), mandatory=True)
    assert channel.queue_declare(queue, passive=True).method.message_count == 200
    with pytest.raises(pika.exceptions.UnroutableError):
        channel.basic_publish("", unique_name("nowhere"), b"x", mandatory=True)
    connection.close()


def test_five_mib_message_byte_exact(system_router: RouterProcess) -> None:
    payload = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    connection = pika.BlockingConnection(_params(system_router))
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("", queue, payload)
    _method, _properties, body = channel.basic_get(queue, auto_ack=True)
    assert body == payload
    connection.close()


def test_heartbeats_keep_an_idle_connection_alive(system_router: RouterProcess) -> None:
    connection = pika.BlockingConnection(_params(system_router, heartbeat=1))
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    # Three heartbeat intervals and a half of silence: RabbitMQ drops a client after two
    # missed intervals, pika drops a broker likewise, so both directions must flow.
    connection.sleep(3.5)
    assert connection.is_open
    channel.basic_publish("", queue, b"still here")
    assert channel.basic_get(queue, auto_ack=True)[2] == b"still here"
    connection.close()


def test_wrong_password_is_access_refused_quickly(system_router: RouterProcess) -> None:
    started = time.monotonic()
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as caught:
        pika.BlockingConnection(
            _params(system_router, credentials=pika.PlainCredentials("guest", "wrong"))
        )
    assert time.monotonic() - started < 2.0
    assert "403" in str(caught.value) and "ACCESS_REFUSED" in str(caught.value)


def test_unknown_vhost_is_a_clean_error(system_router: RouterProcess) -> None:
    vhost = unique_name("missing")
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as caught:
        pika.BlockingConnection(_params(system_router, virtual_host=vhost))
    assert "530" in str(caught.value) and f"vhost {vhost} not found" in str(caught.value)


def test_any_vhost_is_routed(system_router: RouterProcess, system_vhost: str) -> None:
    connection = pika.BlockingConnection(_params(system_router, virtual_host=system_vhost))
    channel = connection.channel()
    channel.queue_declare("in-the-vhost")
    connection.close()
    assert any(q["name"] == "in-the-vhost" for q in _queues(system_vhost))


def _queues(vhost: str) -> list[dict[str, object]]:
    return SystemBroker().list_queues(vhost)


def test_hundred_concurrent_connections_aio_pika(system_router: RouterProcess) -> None:
    url = f"amqp://guest:guest@127.0.0.1:{system_router.port}/"

    async def one(number: int) -> bytes:
        connection = await aio_pika.connect(url, timeout=20)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            queue = await channel.declare_queue(exclusive=True)
            await channel.default_exchange.publish(
                aio_pika.Message(str(number).encode()), routing_key=queue.name
            )
            message = await queue.get(timeout=10)
            assert message is not None
            await message.ack()
            return message.body

    async def main() -> list[bytes]:
        return await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(100))), 60)

    assert asyncio.run(main()) == [str(n).encode() for n in range(100)]


def test_connection_properties_reach_the_broker(
    system_router: RouterProcess, system_broker: SystemBroker, system_vhost: str
) -> None:
    name = unique_name("conn")
    connection = pika.BlockingConnection(
        _params(
            system_router,
            virtual_host=system_vhost,
            client_properties={"connection_name": name},
        )
    )
    try:
        seen_list: list[dict[str, Any]] = []

        def routed() -> bool:
            connections = system_broker.list_connections()
            seen_list[:] = [c for c in connections if c.get("vhost") == system_vhost]
            return bool(seen_list)

        wait_for(routed, timeout=10, what="the routed connection at the broker")
        [seen] = seen_list
        properties = seen["client_properties"]
        assert properties["connection_name"] == name
        assert properties["amqprouter_client"].startswith("127.0.0.1:")
        assert properties["amqprouter_host"].startswith(f"(:{system_router.port}) ")
    finally:
        connection.close()
