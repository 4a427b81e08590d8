"""LISTEN's ACCEPT-PROXY FROM and ALLOW, BACKEND's SEND-PROXY and SEND-PROXY-V2."""

from __future__ import annotations

import pytest

from amqprouter.control.commands import BackendAdd, Command, ListenStart, ListenStartSecure
from amqprouter.control.grammar import ParseError, parse, to_line
from amqprouter.server.admission import ListenOptions

ACCEPT_PROXY_NEEDS_FROM = (
    "ACCEPT-PROXY needs FROM <balancer addresses>: a PROXY header names any client address "
    "its sender likes, so say which peers may send one, e.g. ACCEPT-PROXY FROM "
    "10.0.1.5,10.0.1.6 (docs/edge.md).\n"
)


@pytest.mark.parametrize(
    ("line", "command", "canonical"),
    [
        ("LISTEN START 5673", ListenStart(5673), "LISTEN START 5673"),
        (
            "LISTEN START 5673 accept-proxy from 10.0.1.5",
            ListenStart(5673, proxy_from=("10.0.1.5/32",)),
            "LISTEN START 5673 ACCEPT-PROXY FROM 10.0.1.5/32",
        ),
        (
            "LISTEN START 5673 ALLOW 10.0.0.0/8,::1",
            ListenStart(5673, allow=("10.0.0.0/8", "::1/128")),
            "LISTEN START 5673 ALLOW 10.0.0.0/8,::1/128",
        ),
        (
            "LISTEN START 5673 allow 127.0.0.1 ACCEPT-PROXY FROM 10.0.1.0/24,fd00::1",
            ListenStart(5673, ("10.0.1.0/24", "fd00::1/128"), ("127.0.0.1/32",)),
            "LISTEN START 5673 ACCEPT-PROXY FROM 10.0.1.0/24,fd00::1/128 ALLOW 127.0.0.1/32",
        ),
        (
            "LISTEN START_SECURE 5671 ACCEPT-PROXY FROM 10.0.1.5 ALLOW 192.168.0.0/16,"
            "192.168.0.0/16",
            ListenStartSecure(5671, ("10.0.1.5/32",), ("192.168.0.0/16",)),
            "LISTEN START_SECURE 5671 ACCEPT-PROXY FROM 10.0.1.5/32 ALLOW 192.168.0.0/16",
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
            "LISTEN START 5673 ACCEPT-PROXY FROM 10.0.0.1 ACCEPT-PROXY FROM 10.0.0.2",
            "Unexpected word 'ACCEPT-PROXY': 'LISTEN START 5673 ACCEPT-PROXY FROM 10.0.0.1/32' "
            "takes no more words.\n",
        ),
        # A bare ACCEPT-PROXY: anyone reaching the port would choose their own address.
        ("LISTEN START 5673 ACCEPT-PROXY", ACCEPT_PROXY_NEEDS_FROM),
        ("LISTEN START_SECURE 5671 ACCEPT-PROXY", ACCEPT_PROXY_NEEDS_FROM),
        ("LISTEN START 5673 ACCEPT-PROXY ALLOW 10.0.0.0/8", ACCEPT_PROXY_NEEDS_FROM),
        ("LISTEN START 5673 ALLOW 10.0.0.0/8 ACCEPT-PROXY", ACCEPT_PROXY_NEEDS_FROM),
        (
            "LISTEN START 5673 ACCEPT-PROXY FROM",
            "FROM needs a list: ACCEPT-PROXY FROM cidr[,cidr...]\n",
        ),
        (
            "LISTEN START 5673 ACCEPT-PROXY FROM 10.0.0.1/8",
            "FROM '10.0.0.1/8' is not a network (cidr): 10.0.0.1/8 has host bits set\n",
        ),
        (
            "LISTEN START 5673 ACCEPT-PROXY FROM balancer.example",
            "FROM 'balancer.example' is not a network (cidr): 'balancer.example' does not "
            "appear to be an IPv4 or IPv6 network\n",
        ),
        (
            "LISTEN START 5673 ACCEPT-PROXY FROM ALLOW 10.0.0.0/8",
            "FROM 'ALLOW' is not a network (cidr): 'ALLOW' does not appear to be an IPv4 or "
            "IPv6 network\n",
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
    ("line", "command", "canonical"),
    [
        (
            "LISTEN START 5673 ALLOW ::ffff:127.0.0.2",
            ListenStart(5673, allow=("127.0.0.2/32",)),
            "LISTEN START 5673 ALLOW 127.0.0.2/32",
        ),
        (
            "LISTEN START 5673 ALLOW ::ffff:10.0.0.0/104,10.0.0.0/8,::FFFF:0:0/96",
            ListenStart(5673, allow=("10.0.0.0/8", "0.0.0.0/0")),
            "LISTEN START 5673 ALLOW 10.0.0.0/8,0.0.0.0/0",
        ),
        (
            "LISTEN START_SECURE 5671 ACCEPT-PROXY FROM ::ffff:10.0.1.5,::ffff:10.0.2.0/120",
            ListenStartSecure(5671, proxy_from=("10.0.1.5/32", "10.0.2.0/24")),
            "LISTEN START_SECURE 5671 ACCEPT-PROXY FROM 10.0.1.5/32,10.0.2.0/24",
        ),
        # Wider than the mapped range: IPv6 clients still match it, so it stays as typed.
        ("LISTEN START 5673 ALLOW ::/0", ListenStart(5673, allow=("::/0",)), None),
    ],
)
def test_ipv4_mapped_networks_are_written_as_ipv4(
    line: str, command: ListenStart | ListenStartSecure, canonical: str | None
) -> None:
    """Clients are matched as IPv4, so a mapped rule as typed could never match anyone."""
    assert parse(line) == command
    assert to_line(command) == (canonical or line)


def test_a_mapped_allow_rule_admits_the_client_it_names() -> None:
    command = parse("LISTEN START 5673 ALLOW ::ffff:127.0.0.2 ACCEPT-PROXY FROM ::ffff:10.0.1.5")
    assert isinstance(command, ListenStart)
    options = ListenOptions(command.proxy_from, command.allow)
    assert options.allows("127.0.0.2") and options.allows("::ffff:127.0.0.2")
    assert not options.allows("127.0.0.3")
    assert options.peer_refusal("::ffff:10.0.1.5") is None
    assert options.peer_refusal("10.0.1.5") is None


def test_a_mapped_network_with_host_bits_is_refused() -> None:
    assert parse("LISTEN START 5673 ALLOW ::ffff:10.0.0.1/104") == ParseError(
        "ALLOW '::ffff:10.0.0.1/104' is not a network (cidr): ::ffff:a00:1/104 has host bits set\n"
    )


def test_a_bare_accept_proxy_is_refused_with_the_fix() -> None:
    assert ACCEPT_PROXY_NEEDS_FROM.startswith("ACCEPT-PROXY needs FROM <balancer addresses>: ")
    assert "ACCEPT-PROXY FROM 10.0.1.5,10.0.1.6" in ACCEPT_PROXY_NEEDS_FROM


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
