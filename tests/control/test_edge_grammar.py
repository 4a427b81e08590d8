"""LISTEN's ACCEPT-PROXY and ALLOW, BACKEND's SEND-PROXY and SEND-PROXY-V2 (issue 12)."""

from __future__ import annotations

import pytest

from amqprouter.control.commands import BackendAdd, Command, ListenStart, ListenStartSecure
from amqprouter.control.grammar import ParseError, parse, to_line


@pytest.mark.parametrize(
    ("line", "command", "canonical"),
    [
        ("LISTEN START 5673", ListenStart(5673), "LISTEN START 5673"),
        (
            "LISTEN START 5673 accept-proxy",
            ListenStart(5673, accept_proxy=True),
            "LISTEN START 5673 ACCEPT-PROXY",
        ),
        (
            "LISTEN START 5673 ALLOW 10.0.0.0/8,::1",
            ListenStart(5673, allow=("10.0.0.0/8", "::1/128")),
            "LISTEN START 5673 ALLOW 10.0.0.0/8,::1/128",
        ),
        (
            "LISTEN START 5673 allow 127.0.0.1 ACCEPT-PROXY",
            ListenStart(5673, True, ("127.0.0.1/32",)),
            "LISTEN START 5673 ACCEPT-PROXY ALLOW 127.0.0.1/32",
        ),
        (
            "LISTEN START_SECURE 5671 ACCEPT-PROXY ALLOW 192.168.0.0/16,192.168.0.0/16",
            ListenStartSecure(5671, True, ("192.168.0.0/16",)),
            "LISTEN START_SECURE 5671 ACCEPT-PROXY ALLOW 192.168.0.0/16",
        ),
    ],
)
def test_listen_options_parse_and_write_back(line: str, command: Command, canonical: str) -> None:
    assert parse(line) == command
    assert to_line(command) == canonical
    assert parse(canonical) == command


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("LISTEN START 5673 ALLOW", "ALLOW needs a list: ALLOW cidr[,cidr...]\n"),
        (
            "LISTEN START 5673 ALLOW 10.0.0.1/8",
            "ALLOW '10.0.0.1/8' is not a network (cidr): 10.0.0.1/8 has host bits set\n",
        ),
        (
            "LISTEN START 5673 ALLOW 10.0.0.0/8,",
            "ALLOW '' is not a network (cidr): '' does not appear to be an IPv4 or IPv6 network\n",
        ),
        (
            "LISTEN START 5673 ALLOW example.com",
            "ALLOW 'example.com' is not a network (cidr): 'example.com' does not appear to be "
            "an IPv4 or IPv6 network\n",
        ),
        (
            "LISTEN START 5673 ACCEPT-PROXY ACCEPT-PROXY",
            "Unexpected word 'ACCEPT-PROXY': 'LISTEN START 5673 ACCEPT-PROXY' takes no more "
            "words.\n",
        ),
        (
            "LISTEN START 5673 ACCEPT-PROXI",
            "Unexpected word 'ACCEPT-PROXI': 'LISTEN START 5673' takes no more words.\n",
        ),
        (
            "BACKEND ADD b dc h 5672 SEND-PROXY SEND-PROXY-V2",
            "SEND-PROXY and SEND-PROXY-V2 exclude each other: pick one.\n",
        ),
    ],
)
def test_bad_options_are_refused(line: str, reply: str) -> None:
    assert parse(line) == ParseError(reply)


@pytest.mark.parametrize(
    ("line", "version", "canonical"),
    [
        ("BACKEND ADD b dc h 5672 send-proxy", 1, "BACKEND ADD b dc h 5672 SEND-PROXY"),
        ("BACKEND ADD b dc h 5672 SEND-PROXY-V2", 2, "BACKEND ADD b dc h 5672 SEND-PROXY-V2"),
        (
            "BACKEND ADD_DNS b dc h 5671 TLS SEND-PROXY-V2",
            2,
            "BACKEND ADD_DNS b dc h 5671 SEND-PROXY-V2 TLS",
        ),
        ("BACKEND ADD b dc h 5672", 0, "BACKEND ADD b dc h 5672"),
    ],
)
def test_send_proxy_flags(line: str, version: int, canonical: str) -> None:
    command = parse(line)
    assert isinstance(command, BackendAdd) and command.send_proxy == version
    assert to_line(command) == canonical
    assert parse(canonical) == command


def test_backend_print_names_the_proxy_version() -> None:
    from amqprouter.control.routing_commands import backend_line
    from amqprouter.routing import Backend

    v1 = Backend("b", "dc", "h", 1, dns=False, ip="1.2.3.4", send_proxy=1, tls=True)
    v2 = Backend("b", "dc", "h", 1, send_proxy=2)
    assert backend_line(v1) == "b (dc): h 1.2.3.4:1 PROXY PROTOCOL V1 ENABLED TLS"
    assert backend_line(v2) == "b (dc): h :1 PROXY PROTOCOL V2 ENABLED"
