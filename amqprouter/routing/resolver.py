"""Name resolution for backends, cached so that connection setup rarely resolves.

``trio.socket.getaddrinfo`` runs in a worker thread per call, which halved the
handshake rate of a plain relay (DESIGN.md). Literal addresses skip it entirely and
names are cached for a short time, so a burst of connections shares one lookup.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Final

import trio

#: How long a successful lookup is reused. amqpprox re-resolves at most once a
#: second; a few seconds more saves threads and still follows DNS changes quickly.
CACHE_SECONDS: Final = 5.0

Address = tuple[socket.AddressFamily, tuple[str, int]]


class Resolver:
    def __init__(self, cache_seconds: float = CACHE_SECONDS) -> None:
        self._cache_seconds = cache_seconds
        self._cache: dict[tuple[str, int], tuple[float, list[Address]]] = {}

    async def resolve(self, host: str, port: int) -> list[Address]:
        """Every address of ``host`` in resolver order (OSError if none)."""
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
            return [(family, (str(literal), port))]
        now = trio.current_time()
        cached = self._cache.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses: list[Address] = []
        for family, _type, _proto, _canon, sockaddr in infos:
            entry = (socket.AddressFamily(family), (str(sockaddr[0]), int(sockaddr[1])))
            if entry not in addresses:
                addresses.append(entry)
        if not addresses:
            raise OSError(f"{host} has no addresses")
        self._cache[(host, port)] = (now + self._cache_seconds, addresses)
        return addresses
