"""Resolver: hosts file, then DNS (dnspython on trio) against a fake server on 127.0.0.1.

``FakeDns`` is a tiny UDP responder built on dnspython's message API; it counts every
query it receives, so the tests can prove what was (not) asked. ``test_hostnames``
imports it too.
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
import trio

from amqprouter.net.resolver import CACHE_SECONDS, DNS_TIMEOUT, HostsFile, Resolver

if TYPE_CHECKING:
    from trio_typing import TaskStatus


@attrs.define
class FakeDns:
    """Answers from ``records``; NXDOMAIN for names it has no record of at all."""

    sock: trio.socket.SocketType
    nursery: trio.Nursery
    records: dict[tuple[str, str], tuple[int, list[str]]] = attrs.Factory(dict)
    queries: Counter[tuple[str, str]] = attrs.Factory(Counter)
    silent: bool = False
    delay: float = 0.0

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def add(self, name: str, rdtype: str, ttl: int, *values: str) -> None:
        self.records[(dns.name.from_text(name).to_text().lower(), rdtype)] = (ttl, list(values))

    def count(self, name: str, rdtype: str) -> int:
        return self.queries[(dns.name.from_text(name).to_text().lower(), rdtype)]

    @property
    def total(self) -> int:
        return sum(self.queries.values())

    async def serve(self, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.sock:
            task_status.started()
            while True:
                data, peer = await self.sock.recvfrom(65535)
                query = dns.message.from_wire(data)
                question = query.question[0]
                self.queries[
                    (question.name.to_text().lower(), dns.rdatatype.to_text(question.rdtype))
                ] += 1
                if not self.silent:
                    self.nursery.start_soon(self._answer, query, peer)

    async def _answer(self, query: dns.message.Message, peer: tuple[str, int]) -> None:
        await trio.sleep(self.delay)
        question = query.question[0]
        name = question.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        response = dns.message.make_response(query)
        record = self.records.get((name, rdtype))
        if record is not None:
            ttl, values = record
            response.answer.append(
                dns.rrset.from_text_list(question.name, ttl, dns.rdataclass.IN, rdtype, values)
            )
        elif not any(known == name for known, _ in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        await self.sock.sendto(response.to_wire(), peer)


@pytest.fixture
async def fake_dns(nursery: trio.Nursery) -> FakeDns:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    server = FakeDns(sock, nursery)
    await nursery.start(server.serve)
    return server


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def hosts(tmp_path: Path) -> Path:
    path = tmp_path / "hosts"
    path.write_text("# test hosts\n127.0.0.1 localhost\n::1 localhost ip6-localhost\n")
    return path


def rewrite(path: Path, text: str) -> None:
    """Replace the file and make sure its mtime differs even on a coarse clock."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def make(fake: FakeDns, hosts: Path, **kwargs: object) -> Resolver:
    return Resolver(
        nameservers=["127.0.0.1"],
        port=fake.port,
        hosts_path=hosts,
        **kwargs,  # type: ignore[arg-type]
    )


def test_defaults() -> None:
    assert 0 < DNS_TIMEOUT <= 5
    assert 1 <= CACHE_SECONDS <= 10


async def test_a_and_aaaa_answers_aaaa_first_deduplicated(fake_dns: FakeDns, hosts: Path) -> None:
    fake_dns.add("rmq.test", "A", 60, "10.0.0.1", "10.0.0.2")
    fake_dns.add("rmq.test", "AAAA", 60, "2001:db8::1", "2001:db8:0::1")
    resolver = make(fake_dns, hosts)
    addresses = await resolver.resolve("rmq.test", 5672)
    # AAAA first, then A; within a family the server's order (dnspython shuffles rrsets
    # on the wire, as round-robin DNS servers do).
    assert addresses[0] == (socket.AF_INET6, ("2001:db8::1", 5672))
    assert sorted(addresses[1:]) == [
        (socket.AF_INET, ("10.0.0.1", 5672)),
        (socket.AF_INET, ("10.0.0.2", 5672)),
    ]
    assert fake_dns.count("rmq.test", "A") == 1
    assert fake_dns.count("rmq.test", "AAAA") == 1


async def test_only_a_records(fake_dns: FakeDns, hosts: Path) -> None:
    fake_dns.add("v4.test", "A", 60, "10.0.0.9")
    resolver = make(fake_dns, hosts)
    assert await resolver.resolve("v4.test", 1) == [(socket.AF_INET, ("10.0.0.9", 1))]
    # The cache is per name: another port reuses the answer.
    assert await resolver.resolve("V4.test.", 2) == [(socket.AF_INET, ("10.0.0.9", 2))]
    assert fake_dns.total == 2


async def test_ttl_honoured(fake_dns: FakeDns, hosts: Path) -> None:
    fake_dns.add("short.test", "A", 2, "10.0.0.1")
    fake_dns.add("short.test", "AAAA", 3, "2001:db8::1")
    clock = FakeClock()
    resolver = make(fake_dns, hosts, clock=clock)
    await resolver.resolve("short.test", 1)
    clock.now += 1.9
    await resolver.resolve("short.test", 1)
    assert fake_dns.count("short.test", "A") == 1  # still cached
    clock.now += 0.2  # past the smaller TTL (2 s)
    await resolver.resolve("short.test", 1)
    assert fake_dns.count("short.test", "A") == 2


async def test_ttl_capped(fake_dns: FakeDns, hosts: Path) -> None:
    fake_dns.add("long.test", "A", 86400, "10.0.0.1")
    clock = FakeClock()
    resolver = make(fake_dns, hosts, clock=clock, cache_seconds=5.0)
    await resolver.resolve("long.test", 1)
    clock.now += 4.9
    await resolver.resolve("long.test", 1)
    assert fake_dns.count("long.test", "A") == 1
    clock.now += 0.2
    await resolver.resolve("long.test", 1)
    assert fake_dns.count("long.test", "A") == 2


async def test_cache_expires_on_the_real_trio_clock(fake_dns: FakeDns, hosts: Path) -> None:
    fake_dns.add("real.test", "A", 60, "10.0.0.1")
    resolver = make(fake_dns, hosts, cache_seconds=0.3)
    await resolver.resolve("real.test", 1)
    await resolver.resolve("real.test", 1)
    assert fake_dns.count("real.test", "A") == 1
    await trio.sleep(0.35)
    await resolver.resolve("real.test", 1)
    assert fake_dns.count("real.test", "A") == 2


async def test_known_answers_without_waiting_only_for_addresses_and_fresh_names(
    fake_dns: FakeDns, hosts: Path
) -> None:
    # Sessions ask ``known`` first and skip the lookup's cancel scope when it answers.
    fake_dns.add("known.test", "A", 60, "10.0.0.1")
    clock = FakeClock()
    resolver = make(fake_dns, hosts, clock=clock, cache_seconds=5.0)
    assert resolver.known("::1", 7) == [(socket.AF_INET6, ("::1", 7))]
    assert resolver.known("known.test", 1) is None  # not looked up yet: no query sent
    assert fake_dns.count("known.test", "A") == 0
    await resolver.resolve("known.test", 1)
    assert resolver.known("KNOWN.test.", 2) == [(socket.AF_INET, ("10.0.0.1", 2))]
    clock.now += 5.1
    assert resolver.known("known.test", 1) is None  # expired: resolve looks it up again
    assert fake_dns.count("known.test", "A") == 1


async def test_zero_ttl_not_cached(fake_dns: FakeDns, hosts: Path) -> None:
    fake_dns.add("zero.test", "A", 0, "10.0.0.1")
    resolver = make(fake_dns, hosts, clock=FakeClock())
    await resolver.resolve("zero.test", 1)
    await resolver.resolve("zero.test", 1)
    assert fake_dns.count("zero.test", "A") == 2


async def test_concurrent_lookups_share_one_query(fake_dns: FakeDns, hosts: Path) -> None:
    fake_dns.add("busy.test", "A", 60, "10.0.0.1")
    fake_dns.delay = 0.1
    resolver = make(fake_dns, hosts)
    results: list[object] = []

    async def one() -> None:
        results.append(await resolver.resolve("busy.test", 5672))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(one)
    assert results == [[(socket.AF_INET, ("10.0.0.1", 5672))]] * 20
    assert fake_dns.count("busy.test", "A") == 1
    assert fake_dns.count("busy.test", "AAAA") == 1


async def test_waiters_share_a_failure(fake_dns: FakeDns, hosts: Path) -> None:
    fake_dns.delay = 0.1
    resolver = make(fake_dns, hosts)
    failures: list[str] = []

    async def one() -> None:
        with pytest.raises(OSError, match=r"nowhere\.test") as info:
            await resolver.resolve("nowhere.test", 1)
        failures.append(str(info.value.strerror))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(one)
    assert len(failures) == 5
    assert fake_dns.count("nowhere.test", "A") == 1


async def test_cancelled_leader_hands_over(fake_dns: FakeDns, hosts: Path) -> None:
    """A caller whose connect timeout cancels the lookup does not fail the others."""
    fake_dns.add("slow.test", "A", 60, "10.0.0.1")
    fake_dns.delay = 0.2
    resolver = make(fake_dns, hosts)
    got: list[object] = []

    async def leader() -> None:
        with trio.move_on_after(0.05):
            await resolver.resolve("slow.test", 1)
        got.append("cancelled")

    async def follower() -> None:
        await trio.sleep(0.01)
        got.append(await resolver.resolve("slow.test", 1))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(leader)
        nursery.start_soon(follower)
    assert got == ["cancelled", [(socket.AF_INET, ("10.0.0.1", 1))]]
    assert fake_dns.count("slow.test", "A") == 2  # the follower asked again


async def test_silent_server_times_out_and_delays_nobody_else(
    fake_dns: FakeDns, hosts: Path
) -> None:
    fake_dns.silent = True
    resolver = make(fake_dns, hosts, timeout=0.5)
    fast: list[float] = []
    start = trio.current_time()

    async def other_lookups() -> None:
        await trio.sleep(0.05)
        await resolver.resolve("localhost", 1)
        await resolver.resolve("10.1.1.1", 1)
        fast.append(trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_lookups)
        with pytest.raises(OSError, match=r"dead\.test.*timed out") as info:
            await resolver.resolve("dead.test", 5672)
    elapsed = trio.current_time() - start
    assert 0.45 < elapsed < 0.9
    assert info.value.errno == socket.EAI_AGAIN
    assert fast and fast[0] < 0.3
    assert fake_dns.count("dead.test", "A") >= 1


async def test_failures_are_not_cached(fake_dns: FakeDns, hosts: Path) -> None:
    resolver = make(fake_dns, hosts, clock=FakeClock())
    with pytest.raises(OSError, match=r"late\.test"):
        await resolver.resolve("late.test", 1)
    fake_dns.add("late.test", "A", 60, "10.0.0.7")
    assert await resolver.resolve("late.test", 1) == [(socket.AF_INET, ("10.0.0.7", 1))]


async def test_nxdomain_names_the_host(fake_dns: FakeDns, hosts: Path) -> None:
    resolver = make(fake_dns, hosts)
    with pytest.raises(OSError) as info:
        await resolver.resolve("missing.test", 5672)
    assert info.value.errno == socket.EAI_NONAME
    assert info.value.strerror == "name 'missing.test' does not exist (DNS NXDOMAIN)"
    assert "missing.test" in str(info.value)


async def test_name_without_addresses(fake_dns: FakeDns, hosts: Path) -> None:
    fake_dns.add("mx.test", "MX", 60, "10 mail.test.")
    resolver = make(fake_dns, hosts)
    with pytest.raises(OSError, match=r"'mx\.test' has no A or AAAA records"):
        await resolver.resolve("mx.test", 1)


async def test_hosts_file_wins_over_dns(fake_dns: FakeDns, hosts: Path) -> None:
    fake_dns.add("localhost", "A", 60, "10.9.9.9")
    resolver = make(fake_dns, hosts)
    assert await resolver.resolve("LocalHost", 5672) == [
        (socket.AF_INET, ("127.0.0.1", 5672)),
        (socket.AF_INET6, ("::1", 5672)),
    ]
    assert fake_dns.total == 0


async def test_hosts_file_reread_when_changed(fake_dns: FakeDns, hosts: Path) -> None:
    fake_dns.add("moving.test", "A", 60, "10.9.9.9")
    clock = FakeClock()
    resolver = make(fake_dns, hosts, clock=clock)
    assert await resolver.resolve("moving.test", 1) == [(socket.AF_INET, ("10.9.9.9", 1))]
    rewrite(hosts, "10.0.0.5 moving.test\n::1 localhost\n")
    # Within the cache bound the old answer stands; after it, the new file is read.
    assert await resolver.resolve("moving.test", 1) == [(socket.AF_INET, ("10.9.9.9", 1))]
    clock.now += CACHE_SECONDS + 0.1
    assert await resolver.resolve("moving.test", 1) == [(socket.AF_INET, ("10.0.0.5", 1))]
    assert await resolver.resolve("localhost", 1) == [(socket.AF_INET6, ("::1", 1))]
    assert fake_dns.count("moving.test", "A") == 1


async def test_literals_skip_everything(fake_dns: FakeDns, tmp_path: Path) -> None:
    resolver = make(fake_dns, tmp_path / "absent")
    assert await resolver.resolve("127.0.0.1", 5672) == [(socket.AF_INET, ("127.0.0.1", 5672))]
    assert await resolver.resolve("::1", 5672) == [(socket.AF_INET6, ("::1", 5672))]
    assert await resolver.resolve("2001:DB8:0::1", 1) == [(socket.AF_INET6, ("2001:db8::1", 1))]
    assert fake_dns.total == 0
    assert resolver.hosts._stamp is None  # the hosts file was not even looked at


async def test_no_resolv_conf_means_hosts_only(tmp_path: Path, hosts: Path) -> None:
    empty = tmp_path / "resolv.conf"
    empty.write_text("search example.org\n")
    for conf in (empty, tmp_path / "missing"):
        resolver = Resolver(hosts_path=hosts, resolv_conf=conf)
        assert resolver.dns is None
        assert await resolver.resolve("localhost", 1) == [
            (socket.AF_INET, ("127.0.0.1", 1)),
            (socket.AF_INET6, ("::1", 1)),
        ]
        with pytest.raises(OSError) as info:
            await resolver.resolve("rmq.test", 1)
        assert "'rmq.test'" in str(info.value.strerror)
        assert "no DNS server configured" in str(info.value.strerror)
        assert str(conf) in str(info.value.strerror)


async def test_system_localhost() -> None:
    """The machine's own /etc/hosts and resolv.conf: localhost never reaches DNS."""
    resolver = Resolver()
    addresses = await resolver.resolve("localhost", 5672)
    assert (socket.AF_INET, ("127.0.0.1", 5672)) in addresses
    assert {ip for _, (ip, _) in addresses} <= {"127.0.0.1", "::1"}


def test_hosts_file_parsing(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(
        "10.0.0.1   a.test  A2.test  # comment 10.0.0.9 c.test\n"
        "bogus b.test\n"
        "10.0.0.2 a.test\n"
        "10.0.0.1 again.test\n"
        "fe80::1%lo link.test\n"
        "2001:db8:0:0::1 six.test\n"
        "   \n"
        "10.0.0.3\n"
    )
    table = HostsFile(path)
    assert table.addresses("a.test") == ["10.0.0.1", "10.0.0.2"]
    assert table.addresses("a2.TEST.") == ["10.0.0.1"]
    assert table.addresses("c.test") == []
    assert table.addresses("b.test") == []
    assert table.addresses("six.test") == ["2001:db8::1"]
    assert table.addresses("link.test") == ["fe80::1%lo"]
    assert table.name_for("10.0.0.1") == "a.test"
    assert table.name_for("2001:db8::1") == "six.test"
    assert table.name_for("10.0.0.3") is None
    assert table.name_for("not an ip") is None
    path.unlink()
    assert table.addresses("a.test") == []


async def test_malformed_names_are_oserrors(fake_dns: FakeDns, hosts: Path) -> None:
    resolver = make(fake_dns, hosts)
    for bad in ("a" * 64 + ".test", "a..b", "", "."):
        with pytest.raises(OSError):
            await resolver.resolve(bad, 1)
    assert fake_dns.total == 0
