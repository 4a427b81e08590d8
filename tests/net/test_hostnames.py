"""HostnameMapper (MAPHOSTNAME DNS): hosts file, then PTR via the fake DNS server."""

from __future__ import annotations

from pathlib import Path

import dns.reversename
import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from amqprouter.net.hostnames import MAX_ENTRIES, HostnameMapper
from amqprouter.net.resolver import Resolver
from tests.net.test_resolver import FakeClock, FakeDns, rewrite
from tests.net.test_resolver import fake_dns as fake_dns  # the fixture


def ptr(fake: FakeDns, ip: str, name: str, ttl: int = 60) -> None:
    fake.add(dns.reversename.from_address(ip).to_text(), "PTR", ttl, name)


def ptr_count(fake: FakeDns, ip: str) -> int:
    return fake.count(dns.reversename.from_address(ip).to_text(), "PTR")


@pytest.fixture
def hosts(tmp_path: Path) -> Path:
    path = tmp_path / "hosts"
    path.write_text("127.0.0.1 localhost\n10.0.0.1 rmq1.test rmq1\n::1 localhost6\n")
    return path


def resolver_for(fake: FakeDns, hosts: Path, timeout: float = 1.0) -> Resolver:
    return Resolver(nameservers=["127.0.0.1"], port=fake.port, hosts_path=hosts, timeout=timeout)


def test_cache_bound_matches_amqpprox() -> None:
    assert MAX_ENTRIES == 50_000


async def test_ptr_answer_found_in_background(
    fake_dns: FakeDns, hosts: Path, nursery: trio.Nursery
) -> None:
    ptr(fake_dns, "10.0.0.7", "client7.example.")
    fake_dns.delay = 0.05
    mapper = HostnameMapper(nursery, resolver=resolver_for(fake_dns, hosts))
    start = trio.current_time()
    assert mapper.name_for("10.0.0.7") == "10.0.0.7"  # answers at once, lookup starts
    assert mapper.name_for("10.0.0.7") == "10.0.0.7"  # no second lookup
    assert trio.current_time() - start < 0.01
    assert await mapper.lookup("10.0.0.7") == "client7.example"  # shares the pending one
    assert mapper.name_for("10.0.0.7") == "client7.example"
    assert ptr_count(fake_dns, "10.0.0.7") == 1


async def test_ipv6_ptr(fake_dns: FakeDns, hosts: Path) -> None:
    ptr(fake_dns, "2001:db8::5", "six.example.")
    mapper = HostnameMapper(resolver=resolver_for(fake_dns, hosts))
    assert await mapper.lookup("2001:DB8:0::5") == "six.example"
    assert mapper.name_for("2001:db8::5") == "six.example"


async def test_hosts_file_first(fake_dns: FakeDns, hosts: Path) -> None:
    ptr(fake_dns, "10.0.0.1", "other.example.")
    mapper = HostnameMapper(resolver=resolver_for(fake_dns, hosts))
    assert await mapper.lookup("10.0.0.1") == "rmq1.test"  # first name on the line
    assert await mapper.lookup("::1") == "localhost6"
    assert fake_dns.total == 0


async def test_hosts_file_reread(fake_dns: FakeDns, hosts: Path) -> None:
    mapper = HostnameMapper(resolver=resolver_for(fake_dns, hosts))
    assert await mapper.lookup("127.0.0.1") == "localhost"
    rewrite(hosts, "10.0.0.9 new.test\n")
    assert await mapper.lookup("10.0.0.9") == "new.test"
    assert fake_dns.total == 0


async def test_without_nursery_only_the_cache_is_read(fake_dns: FakeDns, hosts: Path) -> None:
    ptr(fake_dns, "10.0.0.8", "eight.example.")
    mapper = HostnameMapper(resolver=resolver_for(fake_dns, hosts))
    assert mapper.name_for("10.0.0.8") == "10.0.0.8"
    await trio.testing.wait_all_tasks_blocked()  # nothing was started to look it up
    assert fake_dns.total == 0
    assert await mapper.lookup("10.0.0.8") == "eight.example"
    assert mapper.name_for("10.0.0.8") == "eight.example"


async def test_unspecified_and_non_addresses_never_looked_up(
    fake_dns: FakeDns, hosts: Path, nursery: trio.Nursery
) -> None:
    mapper = HostnameMapper(nursery, resolver=resolver_for(fake_dns, hosts))
    for text in ("0.0.0.0", "::", "rmq.example", ""):
        assert mapper.name_for(text) == text
        assert await mapper.lookup(text) == text
    await trio.testing.wait_all_tasks_blocked()
    assert not nursery.child_tasks  # no background lookup was started
    assert fake_dns.total == 0
    assert len(mapper) == 0


async def test_concurrent_lookups_share_one_query(fake_dns: FakeDns, hosts: Path) -> None:
    ptr(fake_dns, "10.0.0.3", "three.example.")
    fake_dns.delay = 0.05
    mapper = HostnameMapper(resolver=resolver_for(fake_dns, hosts))
    names: list[str] = []

    async def one() -> None:
        names.append(await mapper.lookup("10.0.0.3"))

    async with trio.open_nursery() as inner:
        for _ in range(10):
            inner.start_soon(one)
    assert names == ["three.example"] * 10
    assert ptr_count(fake_dns, "10.0.0.3") == 1


async def test_unknown_address_shown_as_itself_then_retried(fake_dns: FakeDns, hosts: Path) -> None:
    clock = FakeClock()
    mapper = HostnameMapper(
        resolver=resolver_for(fake_dns, hosts), unknown_seconds=60.0, clock=clock
    )
    assert await mapper.lookup("10.0.0.4") == "10.0.0.4"  # NXDOMAIN
    ptr(fake_dns, "10.0.0.4", "four.example.")
    assert await mapper.lookup("10.0.0.4") == "10.0.0.4"  # remembered, not asked again
    assert ptr_count(fake_dns, "10.0.0.4") == 1
    clock.now += 61
    assert await mapper.lookup("10.0.0.4") == "four.example"
    clock.now += 10**6
    assert mapper.name_for("10.0.0.4") == "four.example"  # names are kept for good
    assert ptr_count(fake_dns, "10.0.0.4") == 2


async def test_silent_dns_never_blocks_name_for(
    fake_dns: FakeDns, hosts: Path, nursery: trio.Nursery
) -> None:
    fake_dns.silent = True
    mapper = HostnameMapper(nursery, resolver=resolver_for(fake_dns, hosts, timeout=0.3))
    start = trio.current_time()
    assert mapper.name_for("10.0.0.5") == "10.0.0.5"
    assert trio.current_time() - start < 0.01
    assert await mapper.lookup("10.0.0.5") == "10.0.0.5"
    assert 0.25 < trio.current_time() - start < 0.7


async def test_no_dns_configured_uses_hosts_only(tmp_path: Path, hosts: Path) -> None:
    resolver = Resolver(hosts_path=hosts, resolv_conf=tmp_path / "missing")
    mapper = HostnameMapper(resolver=resolver)
    assert await mapper.lookup("10.0.0.1") == "rmq1.test"
    assert await mapper.lookup("10.0.0.2") == "10.0.0.2"


async def test_cache_bounded_with_warning(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("".join(f"10.0.1.{i} host{i}.test\n" for i in range(6)))
    resolver = Resolver(hosts_path=hosts, resolv_conf=tmp_path / "missing")
    mapper = HostnameMapper(resolver=resolver, max_entries=3)
    with capture_logs() as logs:
        for i in range(6):
            assert await mapper.lookup(f"10.0.1.{i}") == f"host{i}.test"
    assert len(mapper) == 3
    assert mapper.name_for("10.0.1.0") == "10.0.1.0"  # oldest dropped
    assert mapper.name_for("10.0.1.5") == "host5.test"
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1  # rate-limited
    assert "cache full" in warnings[0]["event"]
    assert warnings[0]["max_entries"] == 3
