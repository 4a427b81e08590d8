"""Client-address rules: ``RULE ADD priority cidr[,cidr] (FARM name | BACKEND name)
[BREAK|CONTINUE]``.

A rule narrows the backends a vhost's mapping chose to those of its target, for
clients whose address is in one of its networks (the PROXY header's source when the
listener takes one). How rules and mappings combine is ``model.RoutingTable.route``'s
(docs/routing.md); this module holds the rules and finds the ones a client matches.

Matching is on integers: a client's address is turned into (version, integer) once
(``address_key``; an IPv4-mapped IPv6 address counts as the IPv4 one, as ALLOW
counts it), and ``RuleIndex`` files every network under its prefix length: the rules
that hold a client are found with one masked dict lookup per prefix length in use
(typically a handful), whatever the number of rules.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from typing import Final, Literal, TypeAlias

import attrs

#: What a rule does when every backend it narrows to is down: refuse the client
#: (BREAK) or try the next rule (CONTINUE).
OnDown: TypeAlias = Literal["BREAK", "CONTINUE"]
#: The default when RULE ADD names neither.
DEFAULT_ON_DOWN: Final[OnDown] = "CONTINUE"
#: Priorities a rule may have (lowest tried first).
MAX_PRIORITY: Final = 1_000_000


@attrs.frozen
class Rule:
    """One rule. ``networks`` are canonical network texts (``10.0.0.0/8``);
    ``target`` is ("farm", name) or ("backend", name)."""

    priority: int
    networks: tuple[str, ...]
    target: tuple[Literal["backend", "farm"], str]
    on_down: OnDown = DEFAULT_ON_DOWN
    #: (version, mask, network) per network, for ``matches``.
    keys: tuple[tuple[int, int, int], ...] = attrs.field(
        init=False, eq=False, repr=False, hash=False
    )

    def __attrs_post_init__(self) -> None:
        keys = []
        for text in self.networks:
            network = ipaddress.ip_network(text)
            keys.append((network.version, int(network.netmask), int(network.network_address)))
        object.__setattr__(self, "keys", tuple(keys))

    def matches(self, key: tuple[int, int]) -> bool:
        version, value = key
        for net_version, mask, network in self.keys:
            if net_version == version and value & mask == network:
                return True
        return False

    @property
    def label(self) -> str:
        """How logs, CONN and refusals name the rule."""
        kind, name = self.target
        return f"rule {self.priority} ({','.join(self.networks)} -> {kind} {name}, {self.on_down})"


def address_key(host: str) -> tuple[int, int] | None:
    """``host`` (an IP address text) as (version, integer); an IPv4-mapped IPv6 address
    as the IPv4 one. None for anything else (a Unix socket's name, say)."""
    try:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, host), "big")
    except OSError:
        pass
    try:
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0]), "big")
    except OSError:
        return None
    if value >> 32 == 0xFFFF:
        return 4, value & 0xFFFFFFFF
    return 6, value


class RuleIndex:
    """Rules by network, for ``matching``: per IP version, per prefix length, the
    network's integer → the indexes (in ``rules``) of the rules holding it."""

    __slots__ = ("_buckets",)

    def __init__(self, rules: Sequence[Rule]) -> None:
        buckets: dict[int, dict[int, dict[int, list[int]]]] = {4: {}, 6: {}}
        for index, rule in enumerate(rules):
            for version, mask, network in rule.keys:
                by_network = buckets[version].setdefault(mask, {})
                by_network.setdefault(network, []).append(index)
        self._buckets = {
            version: tuple(
                (mask, {net: tuple(ix) for net, ix in by_network.items()})
                for mask, by_network in by_mask.items()
            )
            for version, by_mask in buckets.items()
        }

    def matching(self, key: tuple[int, int]) -> list[int]:
        """The indexes of the rules that hold the address ``key``, in index order."""
        version, value = key
        found: list[int] = []
        for mask, by_network in self._buckets[version]:
            indexes = by_network.get(value & mask)
            if indexes is not None:
                found += indexes
        if len(found) > 1:
            found = sorted(set(found))
        return found
