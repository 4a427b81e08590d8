"""LISTEN: plain and TLS listeners, who may send a PROXY header, who may connect."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from amqprouter.control.commands import (
    Command,
    ListenStart,
    ListenStartSecure,
    ListenStop,
)
from amqprouter.control.grammar.words import (
    INVALID_PORT,
    ParseError,
    Parser,
    port_number,
    subcommands,
    upper,
)
from amqprouter.text import escape

_ACCEPT_PROXY_NEEDS_FROM = (
    "ACCEPT-PROXY needs FROM <balancer addresses>: a PROXY header names any client "
    "address its sender likes, so say which peers may send one, e.g. ACCEPT-PROXY FROM "
    "10.0.1.5,10.0.1.6 (docs/edge.md).\n"
)


def _listen_start(kind: type[ListenStart] | type[ListenStartSecure]) -> Parser:
    def parse_args(args: Sequence[str]) -> Command | ParseError:
        port = port_number(args[0]) if args else None
        if port is None:
            return ParseError(INVALID_PORT)
        proxy_from: tuple[str, ...] = ()
        allow: tuple[str, ...] = ()
        rest = list(args[1:])
        # Each option at most once, in any order; anything else is left for
        # the line's check of unused words to name (grammar.line).
        while rest:
            word = upper(rest[0])
            if word == "ACCEPT-PROXY" and not proxy_from:
                # A bare ACCEPT-PROXY would let anyone who reaches the port choose
                # their own address (and so pass ALLOW): the balancers must be named.
                if len(rest) < 2 or upper(rest[1]) != "FROM":
                    return ParseError(_ACCEPT_PROXY_NEEDS_FROM)
                if len(rest) < 3:
                    return ParseError("FROM needs a list: ACCEPT-PROXY FROM cidr[,cidr...]\n")
                networks = networks_of("FROM", rest[2])
                if isinstance(networks, ParseError):
                    return networks
                proxy_from = networks
                del rest[:3]
            elif word == "ALLOW" and not allow:
                if len(rest) < 2:
                    return ParseError("ALLOW needs a list: ALLOW cidr[,cidr...]\n")
                networks = networks_of("ALLOW", rest[1])
                if isinstance(networks, ParseError):
                    return networks
                allow = networks
                del rest[:2]
            else:
                break
        return kind(port, proxy_from, allow)

    return parse_args


def networks_of(option: str, text: str) -> tuple[str, ...] | ParseError:
    """``cidr[,cidr...]`` as canonical network texts ("10.0.0.0/8", "::1/128"), an
    IPv4-mapped one as the IPv4 network it means (``_ipv4_if_mapped``)."""
    networks: list[str] = []
    for item in text.split(","):
        try:
            network = _ipv4_if_mapped(ipaddress.ip_network(item, strict=True))
        except ValueError as exc:
            return ParseError(f"{option} '{escape(item)}' is not a network (cidr): {exc}\n")
        if str(network) not in networks:
            networks.append(str(network))
    return tuple(networks)


_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _ipv4_if_mapped(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """``::ffff:10.0.0.0/104`` as ``10.0.0.0/8``. An IPv4 client on a dual-stack listener
    is matched as IPv4 (``server.admission``), so a rule kept in its mapped form could
    never match anyone: it would lock everyone out without a word. A network wider than
    the mapped range (``::/0``) keeps its IPv6 meaning."""
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_IPV4_MAPPED):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None  # every address of the mapped range has one
        return ipaddress.IPv4Network((mapped, network.prefixlen - _IPV4_MAPPED.prefixlen))
    return network


def _listen_stop(args: Sequence[str]) -> Command | ParseError:
    if not args:
        return ListenStop(None)
    # amqpprox stops every listener when the port is invalid; a typo must not do that.
    port = port_number(args[0])
    return ParseError(INVALID_PORT) if port is None else ListenStop(port)


LISTEN = subcommands(
    {
        "START": _listen_start(ListenStart),
        "START_SECURE": _listen_start(ListenStartSecure),
        "STOP": _listen_stop,
    },
    missing="No subcommand provided.\n",
    unknown=lambda subcommand: "Unknown subcommand.\n",
)
