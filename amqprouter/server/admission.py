"""Who a listener admits: its options (ACCEPT-PROXY, ALLOW) and the refusal log.

A refused client is closed before any byte is read from it (before the PROXY header
is trusted, its source is checked instead), counted, and logged at most once per
second per address, with how many refusals that line stands for. A scan from many
addresses therefore costs one line per address per second, never one per connection.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import Final

import attrs
import structlog

from amqprouter.net.proxy_transport import ClientRefused
from amqprouter.net.sockets import endpoint

__all__ = ["ClientRefused", "ListenOptions", "RefusalLog"]

log = structlog.get_logger("amqprouter.listener")

#: One refusal line per address per this many seconds.
REFUSAL_LOG_INTERVAL: Final = 1.0
#: Addresses remembered for the rate limit; past it, the oldest quiet ones are forgotten.
REFUSAL_LOG_ADDRESSES: Final = 4096

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@attrs.frozen
class ListenOptions:
    """How a listener admits clients: ``accept_proxy`` reads a PROXY header first (its
    source is then the client); ``allow`` (canonical network texts) lists who may
    connect, empty for anyone."""

    accept_proxy: bool = False
    allow: tuple[str, ...] = ()
    networks: tuple[Network, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "networks", tuple(ipaddress.ip_network(n) for n in self.allow))

    def allows(self, host: str) -> bool:
        """Whether a client at ``host`` may connect (IPv4-mapped IPv6 counts as IPv4)."""
        if not self.networks:
            return True
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


class RefusalLog:
    """Counts refused clients and logs them, at most once per interval per address."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        #: Every refusal since start (STAT, /metrics).
        self.total = 0
        # address -> (when it was last logged, refusals since that line)
        self._recent: dict[str, tuple[float, int]] = {}

    def refused(self, host: str, port: int, listen_port: int) -> None:
        self.total += 1
        now = self._clock()
        last, quiet = self._recent.get(host, (None, 0))
        if last is not None and now - last < REFUSAL_LOG_INTERVAL:
            self._recent[host] = (last, quiet + 1)
            return
        if host not in self._recent and len(self._recent) >= REFUSAL_LOG_ADDRESSES:
            self._forget(now)
        self._recent[host] = (now, 0)
        log.warning(
            "client refused: address not allowed",
            client=endpoint((host, port)),
            port=listen_port,
            also_refused_since_last_line=quiet,
        )

    def _forget(self, now: float) -> None:
        for host, (last, _quiet) in list(self._recent.items()):
            if now - last >= REFUSAL_LOG_INTERVAL:
                del self._recent[host]
        if len(self._recent) >= REFUSAL_LOG_ADDRESSES:  # all recent: drop the oldest half
            for host in list(self._recent)[: REFUSAL_LOG_ADDRESSES // 2]:
                del self._recent[host]
