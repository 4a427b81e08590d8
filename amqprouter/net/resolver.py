"""Name resolution for backends: the hosts file, then DNS through dnspython on trio.

``trio.socket.getaddrinfo`` ran in a worker thread per call, which halved the handshake
rate of a plain relay (DESIGN.md), and a dead DNS server held a thread for as long as
libc liked. This resolver never leaves the event loop:

* literal addresses (``127.0.0.1``, ``::1``) are returned as they are, with no lookup;
* names are looked up in the hosts file first (dnspython does not read it), which is
  re-read whenever it changes;
* then in DNS with ``dns.asyncresolver`` on its trio backend: A and AAAA queried
  concurrently, the whole lookup bounded by ``DNS_TIMEOUT`` so a slow or dead server
  delays only the connections that need that name;
* successful answers are cached for the DNS TTL, at most ``CACHE_SECONDS``; failures
  are not cached (see ``Resolver``). Concurrent lookups of one name share one query.

Address order: the hosts file's order for hosts-file names; AAAA answers then A
answers for DNS names (each in the server's order), duplicates removed. Callers try
them in that order, so a dual-stack name whose IPv6 address refuses falls back to IPv4.

Errors are ``socket.gaierror`` (an ``OSError``) whose ``strerror`` names the host and
says why, e.g. ``name 'rmq.example' does not exist (DNS NXDOMAIN)``.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
from collections.abc import Callable, Sequence
from typing import Final

import dns.asyncbackend
import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver
import trio

from amqprouter.net.single_flight import SingleFlight

#: Bound on one name's whole DNS lookup (A and AAAA run concurrently inside it). A
#: healthy resolver answers in milliseconds; a dead one costs each connection that needs
#: an uncached name this long, never more, and never costs anyone else anything.
DNS_TIMEOUT: Final = 2.0

#: Upper bound on how long an answer is reused, whatever its TTL (hosts-file answers use
#: it too). amqpprox flushes its cache every second; five seconds still follows a DNS
#: change or failover within a few connection attempts while a burst of connections
#: (or a reconnect storm) shares one lookup instead of one per connection.
CACHE_SECONDS: Final = 5.0

HOSTS_PATH: Final = "/etc/hosts"
RESOLV_CONF: Final = "/etc/resolv.conf"

#: Expired cache entries are swept when the cache grows past this many names.
_SWEEP_AT: Final = 1024

Address = tuple[socket.AddressFamily, tuple[str, int]]


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def canonical_ip(text: str) -> str | None:
    """``text`` as a canonical address string, or None if it is not an address."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


#: ``canonical_ip``, cached: every connect to a backend asks, and backends are few.
_literal = functools.lru_cache(maxsize=256)(canonical_ip)


def _name_key(host: str) -> str:
    return host.rstrip(".").lower()


class HostsFile:
    """A hosts(5) file, parsed on first use and re-read whenever it changes.

    Each use costs one ``stat``; the file is read again only when its modification time,
    size or inode differ from the last read (editors that replace the file change the
    inode). A missing or unreadable file counts as empty.
    """

    def __init__(self, path: str | os.PathLike[str] = HOSTS_PATH) -> None:
        self.path = os.fspath(path)
        self._stamp: tuple[int, int, int] | None = None
        self._by_name: dict[str, list[str]] = {}
        self._by_address: dict[str, str] = {}

    def addresses(self, name: str) -> list[str]:
        """Every address listed for ``name`` (case-insensitive), in file order."""
        self._refresh()
        return list(self._by_name.get(_name_key(name), ()))

    def name_for(self, ip: str) -> str | None:
        """The first name of the first line listing ``ip`` (what libc calls canonical)."""
        self._refresh()
        key = canonical_ip(ip)
        return None if key is None else self._by_address.get(key)

    def _refresh(self) -> None:
        try:
            status = os.stat(self.path)
        except OSError:
            stamp = None
        else:
            stamp = (status.st_mtime_ns, status.st_size, status.st_ino)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        self._by_name = {}
        self._by_address = {}
        if stamp is None:
            return
        try:
            with open(self.path, encoding="utf-8", errors="replace") as file:
                lines = file.readlines()
        except OSError:
            return
        for line in lines:
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            ip = canonical_ip(fields[0])
            if ip is None:
                continue
            names = [_name_key(name) for name in fields[1:]]
            self._by_address.setdefault(ip, names[0])
            for name in names:
                known = self._by_name.setdefault(name, [])
                if ip not in known:
                    known.append(ip)


def dns_client(
    *,
    timeout: float = DNS_TIMEOUT,
    nameservers: Sequence[str] | None = None,
    port: int = 53,
    resolv_conf: str | os.PathLike[str] = RESOLV_CONF,
) -> tuple[dns.asyncresolver.Resolver | None, str]:
    """A dnspython async resolver, or ``(None, why)`` when no DNS server is configured.

    ``nameservers`` overrides the resolv.conf servers (then ``port`` applies to them);
    otherwise ``resolv_conf`` is read now, once. A missing resolv.conf or one without a
    ``nameserver`` line leaves the router with the hosts file only.
    """
    try:
        if nameservers is None:
            client = dns.asyncresolver.Resolver(filename=os.fspath(resolv_conf))
        else:
            client = dns.asyncresolver.Resolver(configure=False)
            client.port = port
            client.nameservers = list(nameservers)
    except dns.resolver.NoResolverConfiguration as exc:
        return None, f"no DNS server configured in {os.fspath(resolv_conf)} ({exc})"
    client.timeout = timeout
    client.lifetime = timeout
    return client, ""


class Resolver:
    """Resolve backend names to addresses, without blocking the event loop.

    Failures are not cached: a name that was just added to DNS or the hosts file works
    on the next connection, and concurrent lookups of a failing name already share one
    query. The price is that while a DNS server is dead, each connection needing an
    uncached name waits up to ``timeout`` (the session's connect timeout still wraps it).

    ``clock`` returns seconds (default ``trio.current_time``); tests pass a fake one.
    """

    def __init__(
        self,
        cache_seconds: float = CACHE_SECONDS,
        *,
        timeout: float = DNS_TIMEOUT,
        hosts_path: str | os.PathLike[str] = HOSTS_PATH,
        nameservers: Sequence[str] | None = None,
        port: int = 53,
        resolv_conf: str | os.PathLike[str] = RESOLV_CONF,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.cache_seconds = cache_seconds
        self.timeout = timeout
        self.hosts = HostsFile(hosts_path)
        self.dns, self.dns_unavailable = dns_client(
            timeout=timeout, nameservers=nameservers, port=port, resolv_conf=resolv_conf
        )
        self.backend = dns.asyncbackend.get_backend("trio")
        self._clock = clock
        self._cache: dict[str, tuple[float, list[str]]] = {}
        self._in_flight: SingleFlight[list[str]] = SingleFlight()

    async def resolve(self, host: str, port: int) -> list[Address]:
        """Every address of ``host`` in order (``OSError`` if none)."""
        known = self.known(host, port)
        if known is not None:
            return known
        return [(_family(ip), (ip, port)) for ip in await self._addresses(host)]

    def known(self, host: str, port: int) -> list[Address] | None:
        """``resolve``'s answer when it needs no waiting (an IP address, or a name
        cached and fresh), else None. A session connecting to a backend asks this
        first, and only bounds (and awaits) ``resolve`` when it says None."""
        ip = _literal(host)
        if ip is not None:
            return [(_family(ip), (ip, port))]
        cached = self._fresh(_name_key(host))
        if cached is not None:
            return [(_family(ip), (ip, port)) for ip in cached]
        return None

    def _fresh(self, key: str) -> list[str] | None:
        """The cached addresses of ``key`` if they have not expired."""
        cached = self._cache.get(key)
        return cached[1] if cached is not None and cached[0] > self._clock() else None

    async def _addresses(self, host: str) -> list[str]:
        """Look ``host`` up (``resolve`` found it neither an address nor cached)."""
        key = _name_key(host)
        if not key:
            raise socket.gaierror(socket.EAI_NONAME, f"empty host name {host!r}")
        return await self._in_flight.run(key, lambda: self._lead(key, host))

    async def _lead(self, key: str, host: str) -> list[str]:
        # A caller that waited for another's lookup may find the cache filled since.
        cached = self._fresh(key)
        if cached is not None:
            return cached
        addresses, ttl = await self._lookup(key, host)
        now = self._clock()
        if len(self._cache) >= _SWEEP_AT:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        self._cache[key] = (now + min(ttl, self.cache_seconds), addresses)
        return addresses

    async def _lookup(self, key: str, host: str) -> tuple[list[str], float]:
        """Addresses and how long they may be cached, from the hosts file or DNS."""
        listed = self.hosts.addresses(key)
        if listed:
            return listed, self.cache_seconds
        if self.dns is None:
            raise socket.gaierror(
                socket.EAI_NONAME,
                f"cannot resolve {host!r}: not in {self.hosts.path} and {self.dns_unavailable}",
            )
        answers: dict[dns.rdatatype.RdataType, tuple[list[str], int]] = {}
        errors: list[Exception] = []

        async def query(rdtype: dns.rdatatype.RdataType) -> None:
            assert self.dns is not None
            try:
                answer = await self.dns.resolve(
                    host, rdtype, search=True, lifetime=self.timeout, backend=self.backend
                )
            except (dns.exception.DNSException, OSError, ValueError) as exc:
                # OSError: a socket error dnspython did not turn into a server failure.
                errors.append(exc)
                return
            found = [str(rdata) for rdata in answer]
            answers[rdtype] = (found, answer.chaining_result.minimum_ttl)

        with trio.move_on_after(self.timeout) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(query, dns.rdatatype.AAAA)
                nursery.start_soon(query, dns.rdatatype.A)
        addresses: list[str] = []
        ttls: list[int] = []
        for rdtype in (dns.rdatatype.AAAA, dns.rdatatype.A):
            found, ttl = answers.get(rdtype, ([], 0))
            if found:
                ttls.append(ttl)
            for text in found:
                ip = canonical_ip(text)
                if ip is not None and ip not in addresses:
                    addresses.append(ip)
        if addresses:
            return addresses, min(ttls)
        raise _failure(host, errors, scope.cancelled_caught, self.timeout)


def _failure(
    host: str, errors: list[Exception], timed_out: bool, timeout: float
) -> socket.gaierror:
    """The most telling of the A and AAAA failures, as a gaierror naming ``host``."""
    if any(isinstance(error, dns.resolver.NXDOMAIN) for error in errors):
        return socket.gaierror(socket.EAI_NONAME, f"name {host!r} does not exist (DNS NXDOMAIN)")
    if timed_out or any(isinstance(error, dns.exception.Timeout) for error in errors):
        return socket.gaierror(
            socket.EAI_AGAIN, f"DNS lookup of {host!r} timed out after {timeout:g}s"
        )
    if any(isinstance(error, dns.resolver.NoNameservers) for error in errors):
        return socket.gaierror(
            socket.EAI_AGAIN, f"no DNS server answered for {host!r} (SERVFAIL or refused)"
        )
    if errors and all(isinstance(error, dns.resolver.NoAnswer) for error in errors):
        return socket.gaierror(socket.EAI_NONAME, f"name {host!r} has no A or AAAA records")
    detail = "; ".join(str(error) for error in errors) or "no addresses"
    return socket.gaierror(socket.EAI_FAIL, f"DNS lookup of {host!r} failed: {detail}")
