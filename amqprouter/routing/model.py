"""Routing data: frozen values, replaced whole, never mutated in place.

A session takes one ``RoutingTable`` snapshot when the client's Connection.Open
arrives and routes with it, so a configuration change is either wholly visible to
a new connection or not at all.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Backend:
    """A broker endpoint. ``dns`` backends resolve ``host`` at each connection attempt."""

    name: str
    datacenter: str
    host: str
    port: int
    dns: bool = True

    @property
    def label(self) -> str:
        return f"{self.name} ({self.host}:{self.port})"


class NoRoute(Exception):
    """No broker is mapped for a vhost; the text is what the client is told."""


@attrs.frozen
class RoutingTable:
    """vhost → ordered candidate backends.

    This first version knows one default backend (simple mode); the control plane
    adds vhost mappings and farms behind the same ``candidates`` call.
    """

    default: tuple[Backend, ...] = ()

    def candidates(self, vhost: str) -> tuple[Backend, ...]:
        if not self.default:
            raise NoRoute(f"No known broker mapping for vhost {vhost}")
        return self.default
