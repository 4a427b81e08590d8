"""Who a listener admits: its options (ACCEPT-PROXY FROM, ALLOW) and the refusal log.

A refused peer is closed before any byte is read from it (on an ACCEPT-PROXY port, a
peer outside FROM; the header's source is checked against ALLOW once read), counted,
and logged at most once per second per address, with how many refusals that line
stands for. A scan from many addresses therefore costs one line per address per
second, never one per connection.
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

#: Why a client was refused: ALLOW, and ACCEPT-PROXY FROM (the log line says which).
NOT_ALLOWED: Final = "address not allowed"
NOT_A_BALANCER: Final = "peer may not send a PROXY header (not in ACCEPT-PROXY FROM)"


@attrs.frozen
class ListenOptions:
    """How a listener admits clients.

    ``proxy_from`` (canonical network texts; non-empty turns ACCEPT-PROXY on): the
    balancers that may send a PROXY header, checked against the TCP peer before a byte
    is read; the header's source is then the client. ``allow``: who may connect (the TCP
    peer on a plain port, the header's source on an ACCEPT-PROXY one), empty for anyone.
    """

    proxy_from: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    networks: tuple[Network, ...] = attrs.field(init=False, eq=False, repr=False)
    proxy_networks: tuple[Network, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "networks", tuple(ipaddress.ip_network(n) for n in self.allow))
        object.__setattr__(
            self, "proxy_networks", tuple(ipaddress.ip_network(n) for n in self.proxy_from)
        )

    @property
    def accept_proxy(self) -> bool:
        """Whether a PROXY header is read first (only from the ``proxy_from`` peers)."""
        return bool(self.proxy_from)

    @property
    def checks_peer(self) -> bool:
        """Whether the TCP peer is checked at accept (``peer_refusal``)."""
        return bool(self.proxy_from or self.allow)

    def allows(self, host: str) -> bool:
        """Whether a client at ``host`` may connect (IPv4-mapped IPv6 counts as IPv4)."""
        return not self.networks or _within(host, self.networks)

    def peer_refusal(self, host: str) -> str | None:
        """Why the TCP peer at ``host`` is closed at accept, before a byte is read, or
        None. On an ACCEPT-PROXY port only a FROM balancer may speak, since the header
        it sends names any client it likes; ALLOW is checked on the header's source."""
        if self.proxy_from:
            return None if _within(host, self.proxy_networks) else NOT_A_BALANCER
        return None if self.allows(host) else NOT_ALLOWED


def _within(host: str, networks: tuple[Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


class RefusalLog:
    """Counts refused clients and logs them, at most once per interval per address."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        #: Every refusal since start (STAT, /metrics).
        self.total = 0
        # address -> (when it was last logged, refusals since that line)
        self._recent: dict[str, tuple[float, int]] = {}

    def refused(self, host: str, port: int, listen_port: int, reason: str = NOT_ALLOWED) -> None:
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
            f"client refused: {reason}",
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
