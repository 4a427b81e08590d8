"""Routing policies with the machine's RabbitMQ: sessions land where the policy says.

Two backends that are both the machine's broker (127.0.0.1:5672) under different names:
CONN's ``backend=`` field tells which one each session got. Real pika clients, a real
router process driven with ``amqprouter_ctl``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

import pika
import pytest

from tests.brokers import SYSTEM_PORT, SystemBroker, unique_name, wait_for
from tests.integration.test_failover import must
from tests.router import RouterProcess, running_router

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def router(system_broker: SystemBroker) -> Iterator[RouterProcess]:
    with running_router(SYSTEM_PORT) as started:
        must(started, "BACKEND ADD b1 dc1 127.0.0.1", SYSTEM_PORT)
        must(started, "BACKEND ADD b2 dc1 127.0.0.1", SYSTEM_PORT)
        yield started


@pytest.fixture
def vhost(system_broker: SystemBroker) -> Iterator[str]:
    name = unique_name("routing")
    system_broker.add_vhost(name)
    yield name
    system_broker.delete_vhost(name)


def backends_of(router: RouterProcess, vhost: str) -> Counter[str]:
    """How many of ``vhost``'s sessions each backend has, from CONN."""
    return Counter(
        match.group(1)
        for match in re.finditer(
            rf"^id=\d+ vhost={re.escape(vhost)} .* backend=(\S+) mapping=",
            must(router, "CONN"),
            re.M,
        )
    )


def expect(router: RouterProcess, vhost: str, counts: dict[str, int]) -> None:
    """CONN shows ``counts`` soon (a closed client's session leaves CONN just after)."""
    seen: list[Counter[str]] = []

    def look() -> bool:
        seen[:] = [backends_of(router, vhost)]
        return seen[0] == counts

    try:
        wait_for(look, 10, f"sessions {counts}")
    except Exception:
        raise AssertionError(f"expected {counts}, CONN shows {seen}") from None


def open_clients(router: RouterProcess, vhost: str, count: int) -> list[pika.BlockingConnection]:
    parameters = pika.ConnectionParameters(
        "127.0.0.1", router.port, virtual_host=vhost, connection_attempts=1, socket_timeout=5
    )
    return [pika.BlockingConnection(parameters) for _ in range(count)]


def close_all(connections: list[pika.BlockingConnection]) -> None:
    for connection in connections:
        if connection.is_open:
            connection.close()


def test_weighted_round_robin_sessions_follow_the_weights_and_weight_zero_drains(
    router: RouterProcess, vhost: str
) -> None:
    farm = unique_name("wrr")
    must(router, "FARM ADD", farm, "weighted-round-robin b1*3 b2")
    must(router, "MAP FARM", vhost, farm)
    first = open_clients(router, vhost, 20)
    try:
        expect(router, vhost, {"b1": 15, "b2": 5})
        # Drained: no new session goes to b1, and its 15 sessions stay.
        must(router, "FARM WEIGHT", farm, "b1 0")
        second = open_clients(router, vhost, 6)
        try:
            expect(router, vhost, {"b1": 15, "b2": 11})
            assert all(connection.is_open for connection in first)
        finally:
            close_all(second)
    finally:
        close_all(first)
    assert f"{farm}: b1*0 b2*1 (weighted-round-robin)" in must(router, "FARM PRINT")


def test_least_connections_fills_the_backend_whose_sessions_ended(
    router: RouterProcess, vhost: str
) -> None:
    farm = unique_name("lc")
    must(router, "FARM ADD", farm, "least-connections b1 b2")
    must(router, "MAP FARM", vhost, farm)
    clients = open_clients(router, vhost, 10)
    try:
        expect(router, vhost, {"b1": 5, "b2": 5})
        # Four of b1's sessions end (their order in CONN is their order of opening:
        # ties alternate, so the even ones went to b1).
        close_all(clients[0:8:2])
        expect(router, vhost, {"b1": 1, "b2": 5})
        clients += open_clients(router, vhost, 4)
        expect(router, vhost, {"b1": 5, "b2": 5})
    finally:
        close_all(clients)


def mappings_of(router: RouterProcess, vhost: str) -> list[tuple[str, str]]:
    """(backend, mapping) of each of ``vhost``'s sessions, from CONN."""
    return [
        (match.group(1), match.group(2))
        for match in re.finditer(
            rf"^id=\d+ vhost={re.escape(vhost)} .* backend=(\S+) mapping=(\S+)",
            must(router, "CONN"),
            re.M,
        )
    ]


def test_a_pattern_routes_a_vhost_and_an_exact_mapping_wins_over_it(
    router: RouterProcess, vhost: str
) -> None:
    pattern = vhost[:-4] + "*"  # the vhost's name, its last characters a wildcard
    must(router, "MAP BACKEND", pattern, "b2")
    clients = open_clients(router, vhost, 1)
    try:
        assert mappings_of(router, vhost) == [("b2", pattern)]
        must(router, "MAP BACKEND", vhost, "b1")
        clients += open_clients(router, vhost, 1)
        assert sorted(mappings_of(router, vhost)) == [("b1", vhost), ("b2", pattern)]
    finally:
        close_all(clients)
        must(router, "MAP UNMAP", pattern)
        must(router, "MAP UNMAP", vhost)
