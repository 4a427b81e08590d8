"""``--config-store``'s address forms: one Redis, Sentinels with a service, a Cluster's
startup nodes; every other form refused with a message naming what is accepted, and the
command line refusing it before anything starts."""

from __future__ import annotations

import pytest

from amqprouter.fleet.store_address import (
    StoreAddress,
    StoreAddressError,
    parse_store_address,
)
from tests.test_cli import _run


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis://r:6379/2", StoreAddress("redis", "redis://r:6379/2")),
        ("rediss://r:6380/0", StoreAddress("redis", "rediss://r:6380/0")),
        ("unix:///run/redis.sock", StoreAddress("redis", "unix:///run/redis.sock")),
        (
            "redis+sentinel://s1:26379,s2:26380/mymaster/3",
            StoreAddress(
                "sentinel",
                "redis+sentinel://s1:26379,s2:26380/mymaster/3",
                (("s1", 26379), ("s2", 26380)),
                "mymaster",
                3,
            ),
        ),
        (
            "redis+sentinel://user:secret@s1,[::1]:26381/mymaster",
            StoreAddress(
                "sentinel",
                "redis+sentinel://user:secret@s1,[::1]:26381/mymaster",
                (("s1", 26379), ("::1", 26381)),
                "mymaster",
                0,
                "user",
                "secret",
            ),
        ),
        (
            "redis+cluster://:pw@n1:7000,n2:7001",
            StoreAddress(
                "cluster",
                "redis+cluster://:pw@n1:7000,n2:7001",
                (("n1", 7000), ("n2", 7001)),
                password="pw",
            ),
        ),
        (
            "redis+cluster://n1/0",
            StoreAddress("cluster", "redis+cluster://n1/0", (("n1", 6379),)),
        ),
    ],
)
def test_accepted_forms(url: str, address: StoreAddress) -> None:
    assert parse_store_address(url) == address


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("localhost:6379", "must be one of redis://host:port/db"),
        ("http://r:6379", "unknown scheme 'http'"),
        ("rediss+sentinel://s1/mymaster", "TLS to Sentinels or a Cluster is not supported"),
        ("redis+sentinel://s1:26379", "names the service"),
        ("redis+sentinel://s1:26379/m/1/2", "names the service"),
        ("redis+sentinel://s1:26379/m/x", "the database must be a number"),
        ("redis+cluster://n1:7000/1", "a Redis Cluster has database 0 only"),
        ("redis+cluster://n1:0", "bad port '0'"),
        ("redis+cluster://n1:70000", "bad port '70000'"),
        ("redis+cluster://n1:7000,,n2", "a host is missing"),
        ("redis+cluster://[::1", "bad address"),
        ("redis+cluster://n1?timeout=1", "options (?...) are not supported"),
    ],
)
def test_refused_forms(url: str, says: str) -> None:
    with pytest.raises(StoreAddressError, match=r".*") as caught:
        parse_store_address(url)
    assert says in str(caught.value)


def test_the_command_line_refuses_a_bad_address_before_starting() -> None:
    result = _run("--config-store", "redis+sentinel://s1:26379")
    assert result.returncode == 2, result.stderr
    assert "--config-store: redis+sentinel://host:port[,host:port]/service_name" in result.stderr


def test_a_prefix_without_a_store_is_refused_not_ignored() -> None:
    result = _run("--config-prefix", "prod")
    assert result.returncode == 2, result.stderr
    assert "--config-prefix applies to --config-store" in result.stderr
