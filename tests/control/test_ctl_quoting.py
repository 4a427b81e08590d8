"""amqprouter_ctl passes its arguments through whole: each is quoted as the control grammar
reads it back, so a vhost with a space (RabbitMQ allows one) can be mapped from a shell,
and a client reaches it through the router (the machine's RabbitMQ, the real
amqprouter_ctl)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pika
import pika.exceptions
import pytest
from hypothesis import given
from hypothesis import strategies as st

from amqprouter.control.commands import MapBackend
from amqprouter.control.grammar import parse
from amqprouter.control.grammar.words import quote, split_words
from amqprouter_ctl.cli import command_line
from amqprouter_ctl.cli import quote as ctl_quote
from tests.brokers import SYSTEM_PORT, SystemBroker, free_port, unique_name
from tests.router import running_router

CTL = Path(sys.executable).parent / "amqprouter_ctl"


@given(st.text())
def test_the_client_quotes_as_the_grammar_does(word: str) -> None:
    assert ctl_quote(word) == quote(word)


@given(st.lists(st.text(st.characters(codec="utf-8", exclude_characters="\n\r")), min_size=1))
def test_every_argument_after_the_verb_arrives_whole(words: list[str]) -> None:
    line = command_line(["MAP", *words])
    assert split_words(line.removeprefix("MAP ")) == words or "" in words


def test_the_verb_and_a_whole_line_in_one_argument_go_as_they_are() -> None:
    assert command_line(["MAP", "BACKEND", "my vhost", "rabbit1"]) == (
        "MAP BACKEND 'my vhost' rabbit1"
    )
    assert command_line(["MAP PRINT"]) == "MAP PRINT"
    assert command_line(["MAP", "UNMAP", "it's"]) == """MAP UNMAP "it's\""""
    assert parse(command_line(["map", "backend", 'a "b" \\c', "r"])) == MapBackend('a "b" \\c', "r")


def _ctl(socket_path: Path, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CTL), str(socket_path), *words],
        capture_output=True,
        text=True,
        timeout=15,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.broker
def test_a_vhost_with_a_space_is_mapped_and_reached(system_broker: SystemBroker) -> None:
    vhost = f"my vhost {unique_name('q')}"
    system_broker.add_vhost(vhost)  # rabbitmqctl add_vhost, guest given every right
    try:
        # Simple mode towards a closed port: only the map can reach the broker.
        with running_router(free_port()) as router:
            socket_path = router.stdout_path.parent / "control"
            params = pika.ConnectionParameters(
                "127.0.0.1", router.port, virtual_host=vhost, connection_attempts=1
            )
            with pytest.raises(pika.exceptions.AMQPConnectionError):
                pika.BlockingConnection(params).close()
            backend = ("rabbit1", "dc", "127.0.0.1", str(SYSTEM_PORT))
            added = _ctl(socket_path, "BACKEND", "ADD", *backend)
            assert added.returncode == 0, added.stdout + added.stderr
            mapped = _ctl(socket_path, "MAP", "BACKEND", vhost, "rabbit1")
            assert mapped.returncode == 0, mapped.stdout + mapped.stderr
            assert f'"{vhost}" => Backend:rabbit1\n' in _ctl(socket_path, "MAP", "PRINT").stdout
            # CONFIG PRINT writes it quoted, as a --config file reads it back.
            assert f"MAP BACKEND '{vhost}' rabbit1\n" in _ctl(socket_path, "CONFIG", "PRINT").stdout
            connection = pika.BlockingConnection(params)
            try:
                assert connection.channel().queue_declare("", exclusive=True).method.queue
            finally:
                connection.close()
    finally:
        system_broker.delete_vhost(vhost)
