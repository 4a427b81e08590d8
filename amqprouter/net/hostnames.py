"""Reverse lookups for ``MAPHOSTNAME DNS``: show hostnames instead of client/broker IPs.

amqpprox resolves synchronously on its server thread and caches forever. Here
``HostnameMapper.name_for(ip)`` never waits: it answers from the cache, or answers the
IP itself and gets the name looked up in the background (hosts file first, then a DNS
PTR query through dnspython on trio, bounded by the resolver's timeout), so a later
call shows the name.

Cache: names found are kept for good (PTR records rarely change, as in amqpprox);
addresses without a name (no PTR, NXDOMAIN, DNS down or timed out) are remembered as
themselves for ``UNKNOWN_SECONDS`` so a CONN listing does not start a lookup per row per
call, then tried again. The cache holds at most ``MAX_ENTRIES`` addresses; when full the
oldest entry makes room and a WARN is logged (at most once a minute).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import partial
from typing import Final

import dns.exception
import dns.rdatatype
import dns.reversename
import structlog
import trio

from amqprouter.net.resolver import Resolver
from amqprouter.net.single_flight import SingleFlight

log = structlog.get_logger("amqprouter.hostnames")

#: amqpprox warns once its hostname cache passes this many entries; we stop there.
MAX_ENTRIES: Final = 50_000

#: How long an address that has no name is shown as itself before it is looked up again.
UNKNOWN_SECONDS: Final = 60.0

#: At most one "cache full" warning per this many seconds.
_WARN_EVERY: Final = 60.0


class HostnameMapper:
    """IP → hostname, from a cache that background lookups fill.

    ``nursery``: where ``name_for`` starts lookups for addresses it has not seen. Without
    one, ``name_for`` only reads the cache and the caller runs ``await lookup(ip)`` itself.

    ``resolver``: supplies the hosts file, the DNS client and the timeout (a fresh
    ``Resolver()``, i.e. /etc/hosts and /etc/resolv.conf, if not given); pass the
    router's own resolver to share them.
    """

    def __init__(
        self,
        nursery: trio.Nursery | None = None,
        *,
        resolver: Resolver | None = None,
        max_entries: int = MAX_ENTRIES,
        unknown_seconds: float = UNKNOWN_SECONDS,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._nursery = nursery
        self._resolver = resolver if resolver is not None else Resolver()
        self._max_entries = max_entries
        self._unknown_seconds = unknown_seconds
        self._clock = clock
        #: ip -> (name, expiry or None for never); insertion order = eviction order.
        self._cache: dict[str, tuple[str, float | None]] = {}
        self._pending: SingleFlight[str] = SingleFlight()
        self._warned_at: float | None = None

    def __len__(self) -> int:
        return len(self._cache)

    def name_for(self, ip: str) -> str:
        """The name of ``ip`` if known, else ``ip`` (and a lookup starts if it can)."""
        key = _lookup_key(ip)
        if key is None:
            return ip
        cached = self._cached(key)
        if cached is not None:
            return cached
        if self._nursery is not None and not self._pending.busy(key):
            self._nursery.start_soon(self._pending.run, key, partial(self._run, key))
        return ip

    async def lookup(self, ip: str) -> str:
        """Find, cache and return the name of ``ip`` (``ip`` itself if it has none).

        Never raises for lookup failures; a lookup already under way is shared.
        """
        key = _lookup_key(ip)
        if key is None:
            return ip
        cached = self._cached(key)
        if cached is not None:
            return cached
        return await self._pending.run(key, partial(self._run, key))

    async def _run(self, key: str) -> str:
        name = await self._find(key)
        if name is None:
            self._store(key, key, self._clock() + self._unknown_seconds)
            return key
        self._store(key, name, None)
        return name

    async def _find(self, ip: str) -> str | None:
        listed = self._resolver.hosts.name_for(ip)
        if listed is not None:
            return listed
        client = self._resolver.dns
        if client is None:
            return None
        timeout = self._resolver.timeout
        with trio.move_on_after(timeout):
            try:
                answer = await client.resolve(
                    dns.reversename.from_address(ip),
                    dns.rdatatype.PTR,
                    lifetime=timeout,
                    backend=self._resolver.backend,
                )
            except (dns.exception.DNSException, OSError, ValueError) as exc:
                log.debug("reverse lookup failed", address=ip, error=str(exc))
                return None
            for rdata in answer:
                name: str = rdata.to_text().rstrip(".")
                if name:
                    return name
            return None
        log.debug("reverse lookup timed out", address=ip, timeout=timeout)
        return None

    def _cached(self, key: str) -> str | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        name, expiry = entry
        if expiry is not None and expiry <= self._clock():
            del self._cache[key]
            return None
        return name

    def _store(self, key: str, name: str, expiry: float | None) -> None:
        self._cache.pop(key, None)
        if self._max_entries <= 0:
            return
        while len(self._cache) >= self._max_entries:
            del self._cache[next(iter(self._cache))]
            now = self._clock()
            if self._warned_at is None or now - self._warned_at >= _WARN_EVERY:
                self._warned_at = now
                log.warning(
                    "hostname cache full, dropping the oldest entries",
                    max_entries=self._max_entries,
                )
        self._cache[key] = (name, expiry)


def _lookup_key(ip: str) -> str | None:
    """The canonical form of ``ip``, or None when it is not to be looked up.

    Unspecified addresses (``0.0.0.0``: an unconnected side) and text that is not an
    address at all are never looked up.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if address.is_unspecified:
        return None
    return str(address)
