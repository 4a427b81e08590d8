"""Routing policies with the machine's RabbitMQ: sessions land where the policy says.

Two backends that are both the machine's broker (127.0.0.1:5672) under different names:
CONN's ``backend=`` field tells which one each session got. Real pika clients, a real
router process driven with ``amqprouter_ctl``.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pamqp.commands
import pamqp.frame
import pika
import pytest

from amqprouter.routing.sticky import StickyTable
from amqprouter.server import sticky_file
from tests.brokers import SYSTEM_PORT, SystemBroker, free_port, unique_name, wait_for
from tests.integration.test_failover import must
from tests.proxy_clients import header_from, raw_client, read_method
from tests.router import RouterProcess, running_router, start_router

pytestmark = pytest.mark.broker


def run(router: RouterProcess, *parts: str | int) -> str:
    """``must`` with a command written as one line: each word its own argument (the
    ctl quotes an argument that holds a space, as one word)."""
    return must(router, *" ".join(str(part) for part in parts).split())


@pytest.fixture(scope="module")
def router(system_broker: SystemBroker) -> Iterator[RouterProcess]:
    with running_router(SYSTEM_PORT) as started:
        run(started, "BACKEND ADD b1 dc1 127.0.0.1", SYSTEM_PORT)
        run(started, "BACKEND ADD b2 dc1 127.0.0.1", SYSTEM_PORT)
        yield started


@pytest.fixture(scope="module")
def proxy_port(router: RouterProcess) -> int:
    """A listener that takes a PROXY header from loopback: its source is the client."""
    port = free_port()
    run(router, "LISTEN START", port, "ACCEPT-PROXY FROM 127.0.0.1/32")
    return port


def proxied_open(port: int, source: str, vhost: str) -> tuple[socket.socket, object]:
    """A client named ``source`` by its PROXY header: its socket and the router's answer
    to its Connection.Open (Open-Ok, or the Close that refused it)."""
    sock = raw_client("127.0.0.1", port, header_from(source, port))
    buffer = bytearray()
    assert isinstance(read_method(sock, buffer), pamqp.commands.Connection.Start)
    start_ok = pamqp.commands.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest")
    sock.sendall(pamqp.frame.marshal(start_ok, 0))
    tune = read_method(sock, buffer)
    assert isinstance(tune, pamqp.commands.Connection.Tune)
    tune_ok = pamqp.commands.Connection.TuneOk(tune.channel_max, tune.frame_max, 0)
    sock.sendall(pamqp.frame.marshal(tune_ok, 0))
    sock.sendall(pamqp.frame.marshal(pamqp.commands.Connection.Open(virtual_host=vhost), 0))
    return sock, read_method(sock, buffer)


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
            run(router, "CONN"),
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
    run(router, "FARM ADD", farm, "weighted-round-robin b1*3 b2")
    run(router, "MAP FARM", vhost, farm)
    first = open_clients(router, vhost, 20)
    try:
        expect(router, vhost, {"b1": 15, "b2": 5})
        # Drained: no new session goes to b1, and its 15 sessions stay.
        run(router, "FARM WEIGHT", farm, "b1 0")
        second = open_clients(router, vhost, 6)
        try:
            expect(router, vhost, {"b1": 15, "b2": 11})
            assert all(connection.is_open for connection in first)
        finally:
            close_all(second)
    finally:
        close_all(first)
    assert f"{farm}: b1*0 b2*1 (weighted-round-robin)" in run(router, "FARM PRINT")


def test_least_connections_fills_the_backend_whose_sessions_ended(
    router: RouterProcess, vhost: str
) -> None:
    farm = unique_name("lc")
    run(router, "FARM ADD", farm, "least-connections b1 b2")
    run(router, "MAP FARM", vhost, farm)
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
            run(router, "CONN"),
            re.M,
        )
    ]


def test_a_pattern_routes_a_vhost_and_an_exact_mapping_wins_over_it(
    router: RouterProcess, vhost: str
) -> None:
    pattern = vhost[:-4] + "*"  # the vhost's name, its last characters a wildcard
    run(router, "MAP BACKEND", pattern, "b2")
    clients = open_clients(router, vhost, 1)
    try:
        assert mappings_of(router, vhost) == [("b2", pattern)]
        run(router, "MAP BACKEND", vhost, "b1")
        clients += open_clients(router, vhost, 1)
        assert sorted(mappings_of(router, vhost)) == [("b1", vhost), ("b2", pattern)]
    finally:
        close_all(clients)
        run(router, "MAP UNMAP", pattern)
        run(router, "MAP UNMAP", vhost)


def test_a_rule_narrows_proxied_clients_and_break_refuses_them_when_its_backend_is_down(
    router: RouterProcess, proxy_port: int, vhost: str
) -> None:
    farm = unique_name("both")
    run(router, "FARM ADD", farm, "round-robin b1 b2")
    run(router, "MAP FARM", vhost, farm)
    run(router, "RULE ADD 10 10.1.0.0/16 BACKEND b2 BREAK")
    sockets: list[socket.socket] = []
    try:
        for _ in range(3):
            sock, answer = proxied_open(proxy_port, "10.1.0.5", vhost)
            sockets.append(sock)
            assert isinstance(answer, pamqp.commands.Connection.OpenOk)
        conn = run(router, "CONN")
        lines = [line for line in conn.splitlines() if f"vhost={vhost} " in line]
        assert len(lines) == 3
        for line in lines:
            # The PROXY header's source is the client the rule matched.
            assert "ingressRemote=10.1.0.5:40000" in line
            assert f" backend=b2 mapping={vhost} rule=10 " in line
        # Other clients (pika from 127.0.0.1) still use the whole farm.
        others = open_clients(router, vhost, 2)
        close_all(others)
        # Its one backend disabled: BREAK refuses with 320, naming the rule.
        run(router, "BACKEND DISABLE b2")
        sock, answer = proxied_open(proxy_port, "10.1.0.6", vhost)
        sockets.append(sock)
        assert isinstance(answer, pamqp.commands.Connection.Close)
        assert answer.reply_code == 320
        assert answer.reply_text == (
            f"CONNECTION_FORCED - no backend available for vhost {vhost}: rule 10 "
            "(10.1.0.0/16 -> backend b2, BREAK) found every backend down"
        )
        # CONTINUE instead: the next rule (none), so the vhost's farm (b1).
        run(router, "RULE ADD 10 10.1.0.0/16 BACKEND b2 CONTINUE")
        sock, answer = proxied_open(proxy_port, "10.1.0.7", vhost)
        sockets.append(sock)
        assert isinstance(answer, pamqp.commands.Connection.OpenOk)
        assert "ingressRemote=10.1.0.7:40000 " in run(router, "CONN")
        assert re.search(
            r"ingressRemote=10\.1\.0\.7:40000 .* backend=b1 mapping=", run(router, "CONN")
        )
    finally:
        for sock in sockets:
            sock.close()
        run(router, "BACKEND ENABLE b2")
        run(router, "RULE DELETE 10")


def test_sticky_clients_survive_a_sigkill_during_writes(
    system_broker: SystemBroker, vhost: str, tmp_path: Path
) -> None:
    proxy = free_port()
    config = tmp_path / "router.conf"
    config.write_text(
        f"BACKEND ADD b1 dc1 127.0.0.1 {SYSTEM_PORT}\n"
        f"BACKEND ADD b2 dc1 127.0.0.1 {SYSTEM_PORT}\n"
        "FARM ADD s round-robin b1 b2\n"
        "FARM STICKY s ON 600\n"
        f"MAP FARM {vhost} s\n"
        f"LISTEN START {proxy} ACCEPT-PROXY FROM 127.0.0.1/32\n"
    )
    path = tmp_path / "sticky.json"
    extra = ["--config", str(config), "--sticky-file", str(path)]

    def backend_of(router: RouterProcess, source: str) -> str:
        sock, answer = proxied_open(proxy, source, vhost)
        try:
            assert isinstance(answer, pamqp.commands.Connection.OpenOk), answer
            found = re.search(
                rf"ingressRemote={re.escape(source)}:40000 .* backend=(\S+)", run(router, "CONN")
            )
            assert found is not None
            return found.group(1)
        finally:
            sock.close()

    first = start_router(SYSTEM_PORT, extra=extra)
    try:
        assert backend_of(first, "10.7.0.1") == "b1"
        assert backend_of(first, "10.7.0.2") == "b2"  # the client the test follows
        assert backend_of(first, "10.7.0.2") == "b2"
        # More clients, so the file is being rewritten when the router is killed.
        deadline = time.monotonic() + 2.5
        index = 0
        while time.monotonic() < deadline:
            index += 1
            backend_of(first, f"10.8.{index // 200}.{index % 200}")
    finally:
        first.stop(signal.SIGKILL)
        shutil.rmtree(first.stdout_path.parent, ignore_errors=True)
    table = StickyTable()
    assert sticky_file.load(path, table) >= 2
    assert table.member("s", "10.7.0.2") == "b2"

    with running_router(SYSTEM_PORT, extra=extra) as second:
        assert "Sticky clients loaded from" in second.stdout
        # A fresh round-robin would start at b1: the client keeps b2.
        assert backend_of(second, "10.7.0.2") == "b2"
        assert backend_of(second, "10.9.0.1") == "b1"
