"""MAP ... AS with the machine's RabbitMQ: the broker opens the renamed vhost.

A pika client opens a vhost the broker does not have; the mapping renames it to one the
broker has. The client works (publish, consume); the broker's own listings prove which
vhost it opened (the connection's vhost, the declared queue); CONN shows both names.
A rename to a vhost the broker lacks gets the broker's own refusal, naming that vhost.
A rename to a vhost with a space is read from a ``--config`` file, written back by CONFIG
PRINT, and changed by a reload.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest

from tests.brokers import SYSTEM_PORT, SystemBroker, free_port, unique_name, wait_for
from tests.integration.test_failover import must
from tests.integration.test_reload import router_with_config
from tests.router import RouterProcess, running_router

pytestmark = pytest.mark.broker


@pytest.fixture
def renamed(system_broker: SystemBroker) -> Iterator[str]:
    """A vhost that exists on the broker (guest may do anything in it), deleted after."""
    name = unique_name("renamed")
    system_broker.add_vhost(name)
    yield name
    system_broker.delete_vhost(name)


@pytest.fixture
def router(system_broker: SystemBroker) -> Iterator[RouterProcess]:
    with running_router(SYSTEM_PORT) as started:
        must(started, "BACKEND", "ADD", "b", "dc1", "127.0.0.1", SYSTEM_PORT)
        yield started


def connect(router: RouterProcess, vhost: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters(
            "127.0.0.1", router.port, virtual_host=vhost, connection_attempts=1, socket_timeout=5
        )
    )


def test_the_broker_opens_the_renamed_vhost_and_the_client_keeps_its_own(
    router: RouterProcess, system_broker: SystemBroker, renamed: str
) -> None:
    client_vhost = unique_name("orders")
    assert client_vhost not in system_broker.list_vhosts()  # only the rename can open it
    must(router, "MAP", "BACKEND", client_vhost, "b", "AS", renamed)
    assert f'"{client_vhost}" => Backend:b AS {renamed}\n' in must(router, "MAP", "PRINT")

    connection = connect(router, client_vhost)
    try:
        channel = connection.channel()
        queue = unique_name("q")
        channel.queue_declare(queue)  # deleted with the vhost
        channel.basic_publish("", queue, b"through the rename")
        method, _properties, body = next(channel.consume(queue, inactivity_timeout=5))
        assert body == b"through the rename"
        assert method is not None
        channel.basic_ack(method.delivery_tag)
        channel.cancel()

        # The broker's side: the queue lives in the renamed vhost, the connection is in it.
        assert queue in [q["name"] for q in system_broker.list_queues(renamed)]
        wait_for(
            lambda: any(
                c["vhost"] == renamed and "amqprouter_client" in c["client_properties"]
                for c in system_broker.list_connections()
            ),
            10,
            "the router's connection in the renamed vhost",
        )

        # The router's side: the client's vhost, with the broker's beside the mapping.
        line = next(
            line
            for line in must(router, "CONN").splitlines()
            if line.startswith("id=") and f" vhost={client_vhost} " in line
        )
        assert re.search(
            rf" backend=b mapping={re.escape(client_vhost)} brokerVhost={re.escape(renamed)} "
            r"rule=- ",
            line,
        ), line
        records = [json.loads(text) for text in must(router, "--json", "CONN").splitlines()]
        mine = [r for r in records if r["vhost"] == client_vhost]
        assert [(r["mapping"], r["brokerVhost"]) for r in mine] == [(client_vhost, renamed)]
    finally:
        connection.close()


def test_an_unrenamed_vhost_has_a_null_broker_vhost(router: RouterProcess, renamed: str) -> None:
    must(router, "MAP", "BACKEND", renamed, "b")
    connection = connect(router, renamed)
    try:
        records = [json.loads(text) for text in must(router, "--json", "CONN").splitlines()]
        mine = [r for r in records if r["vhost"] == renamed]
        assert [r["brokerVhost"] for r in mine] == [None]
        line = next(line for line in must(router, "CONN").splitlines() if renamed in line)
        assert "brokerVhost=" not in line  # an unrenamed line keeps its fields
    finally:
        connection.close()


def test_a_rename_to_a_missing_vhost_gets_the_brokers_refusal(
    router: RouterProcess, system_broker: SystemBroker
) -> None:
    client_vhost, missing = unique_name("orders"), unique_name("missing")
    must(router, "MAP", "BACKEND", client_vhost, "b", "AS", missing)
    with pytest.raises(pika.exceptions.AMQPConnectionError) as refused:
        connect(router, client_vhost)
    # RabbitMQ's 530 names the vhost it was asked for: the broker's, not the client's.
    text = repr(refused.value)
    assert "530" in text or "NOT_ALLOWED" in text, text
    assert missing in text, text


def test_a_config_file_rename_with_a_space_round_trips_and_a_reload_changes_it(
    system_broker: SystemBroker, tmp_path: Path
) -> None:
    spaced = f"renamed {unique_name('spaced')}"  # a vhost name RabbitMQ allows
    system_broker.add_vhost(spaced)
    try:
        port, client_vhost = free_port(), unique_name("orders")
        config = tmp_path / "router.conf"
        config.write_text(
            f"BACKEND ADD b dc 127.0.0.1 {SYSTEM_PORT}\n"
            f"MAP BACKEND {client_vhost} b AS '{spaced}'\n"
            f"LISTEN START {port}\n"
        )
        with router_with_config(config) as router:
            printed = must(router, "CONFIG", "PRINT")
            assert f"MAP BACKEND {client_vhost} b AS '{spaced}'\n" in printed
            connection = pika.BlockingConnection(
                pika.ConnectionParameters(
                    "127.0.0.1", port, virtual_host=client_vhost, connection_attempts=1
                )
            )
            try:
                queue = unique_name("q")
                connection.channel().queue_declare(queue)
                assert queue in [q["name"] for q in system_broker.list_queues(spaced)]
            finally:
                connection.close()

            missing = unique_name("missing")
            config.write_text(printed.replace(f"AS '{spaced}'", f"AS {missing}"))
            reloaded = must(router, "CONFIG", "RELOAD")
            assert f"Replaced map {client_vhost} -> b AS {missing}" in reloaded
            with pytest.raises(pika.exceptions.AMQPConnectionError) as refused:
                pika.BlockingConnection(
                    pika.ConnectionParameters(
                        "127.0.0.1", port, virtual_host=client_vhost, connection_attempts=1
                    )
                )
            assert missing in repr(refused.value)
    finally:
        system_broker.delete_vhost(spaced)
