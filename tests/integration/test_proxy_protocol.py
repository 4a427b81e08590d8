"""PROXY protocol against real peers: RabbitMQ with ``proxy_protocol = true`` behind the
router (SEND-PROXY, SEND-PROXY-V2) and Debian's HAProxy in front of it (ACCEPT-PROXY).

Proved from both ends: the router's CONN names the client HAProxy served, and
``rabbitmqctl list_connections peer_host peer_port`` names the client's own socket,
not the router's.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from amqprouter.observe.log_queue import FLUSH_INTERVAL
from tests.brokers import (
    NodeTls,
    RabbitNode,
    RabbitNodeFactory,
    SystemBroker,
    free_port,
    port_is_open,
    wait_for,
)
from tests.integration.test_control_plane import ControlledRouter, running_router
from tests.proxy_clients import header_from, open_session, raw_client, read_all
from tests.router import REPO
from tests.tls_certs import TlsFiles

pytestmark = pytest.mark.broker

WAIT = 15.0


@pytest.fixture(scope="module")
def proxy_node(session_rabbit_node_factory: RabbitNodeFactory) -> RabbitNode:
    """A private node that requires a PROXY header on every AMQP connection."""
    return session_rabbit_node_factory.create_configured("proxy_protocol = true\n")


@pytest.fixture(scope="module")
def haproxy_binary() -> str:
    """Debian's haproxy, installed (as scripts/bench-setup does) when missing."""
    found = shutil.which("haproxy")
    if found is None:
        result = subprocess.run(
            [str(REPO / "scripts" / "bench-setup")], capture_output=True, text=True, check=False
        )
        found = shutil.which("haproxy")
        if found is None:
            pytest.fail(
                "HAProxy is needed and could not be installed (scripts/bench-setup, as root):\n"
                f"{result.stdout}\n{result.stderr}"
            )
    return found


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="amqprouter-px-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def haproxy(binary: str, workdir: Path, router_port: int, send: str) -> Iterator[int]:
    """HAProxy in TCP mode in front of ``router_port``, sending ``send`` (send-proxy[-v2])."""
    port = free_port()
    config = workdir / "haproxy.cfg"
    config.write_text(
        "global\n"
        "    maxconn 100\n"
        "defaults\n"
        "    mode tcp\n"
        "    timeout connect 5s\n"
        "    timeout client 60s\n"
        "    timeout server 60s\n"
        "listen amqp\n"
        f"    bind 127.0.0.1:{port}\n"
        f"    server router 127.0.0.1:{router_port} {send}\n"
    )
    log = (workdir / "haproxy.log").open("wb")
    process = subprocess.Popen(
        [binary, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for(lambda: port_is_open(port), timeout=WAIT, what=f"haproxy on {port}")
        yield port
    finally:
        process.terminate()
        process.wait(WAIT)
        log.close()


def client_socket_name(connection: pika.BlockingConnection) -> tuple[str, int]:
    """The (host, port) of the pika client's own socket."""
    sock: Any = connection._impl._transport._sock  # pika has no public accessor
    host, port = sock.getsockname()[:2]
    return str(host), int(port)


def broker_peer(node: RabbitNode, name: str) -> tuple[str, int]:
    """What the broker reports as the peer of the connection named ``name``."""
    found: list[tuple[str, int]] = []

    def listed() -> bool:
        for c in node.list_connections():
            if c["client_properties"].get("connection_name") == name:
                found.append((c["peer_host"], c["peer_port"]))
                return True
        return False

    wait_for(listed, timeout=WAIT, what=f"connection {name} on {node.name}")
    return found[0]


def conn_field(router: ControlledRouter, field: str) -> str:
    out = router.must("CONN")
    match = re.search(rf"{field}=(\S+)", out)
    assert match is not None, out
    return match.group(1)


def connect(port: int, name: str) -> pika.BlockingConnection:
    params = pika.ConnectionParameters(
        "127.0.0.1",
        port,
        client_properties={"connection_name": name},
        connection_attempts=1,
        socket_timeout=WAIT,
        blocked_connection_timeout=WAIT,
    )
    return pika.BlockingConnection(params)


def configure(router: ControlledRouter, node: RabbitNode, backend: str, *listen: str) -> int:
    """``backend`` with ``{port}`` for the node's port, mapped to "/"; a listener."""
    router.must(*backend.format(port=node.port).split())
    router.must("MAP BACKEND / b")
    router.port = free_port()
    router.must(
        "LISTEN", "START", router.port, *(word for words in listen for word in words.split())
    )
    return router.port


@pytest.mark.parametrize(
    "backend",
    [
        "BACKEND ADD b dc 127.0.0.1 {port} SEND-PROXY",
        "BACKEND ADD_DNS b dc localhost {port} SEND-PROXY-V2",
    ],
)
def test_broker_sees_the_client_not_the_router(
    proxy_node: RabbitNode, workdir: Path, backend: str
) -> None:
    """Bug fixed: the reference writes a malformed TCP4 line for ADD_DNS backends."""
    with running_router(workdir / "control") as router:
        port = configure(
            router, proxy_node, backend.replace(" SEND", " PORT SEND").replace(" PORT", "")
        )
        name = f"px-out-{time.monotonic_ns()}"
        connection = connect(port, name)
        try:
            client = client_socket_name(connection)
            assert broker_peer(proxy_node, name) == client
            # ... and not the router's own socket towards the broker.
            assert conn_field(router, "egressLocal") != f"{client[0]}:{client[1]}"
            connection.channel().queue_declare("", exclusive=True)
        finally:
            connection.close()


@pytest.mark.parametrize("send", ["send-proxy-v2", "send-proxy"])
def test_haproxy_in_front_and_rabbitmq_behind_see_the_original_client(
    proxy_node: RabbitNode, haproxy_binary: str, workdir: Path, send: str
) -> None:
    with running_router(workdir / "control") as router:
        router_port = configure(
            router,
            proxy_node,
            "BACKEND ADD b dc 127.0.0.1 {port}",
            "ACCEPT-PROXY FROM 127.0.0.1",
            "ALLOW",
            "127.0.0.0/8",
        )
        # v1 out behind v2 in, and v2 out behind v1 in: every combination crosses.
        router.must("BACKEND DELETE b")
        router.must(
            "BACKEND ADD b dc 127.0.0.1",
            proxy_node.port,
            "SEND-PROXY" if send == "send-proxy-v2" else "SEND-PROXY-V2",
        )
        with haproxy(haproxy_binary, workdir, router_port, send) as front:
            name = f"px-in-{send}-{time.monotonic_ns()}"
            connection = connect(front, name)
            try:
                client = client_socket_name(connection)
                assert conn_field(router, "ingressRemote") == f"{client[0]}:{client[1]}"
                assert broker_peer(proxy_node, name) == client
                connection.channel().queue_declare("", exclusive=True)
            finally:
                connection.close()
        config = router.must("CONFIG PRINT")
        assert (
            f"LISTEN START {router_port} ACCEPT-PROXY FROM 127.0.0.1/32 ALLOW 127.0.0.0/8\n"
            in config
        )


def test_a_plain_client_on_an_accept_proxy_listener_is_closed(
    proxy_node: RabbitNode, workdir: Path
) -> None:
    with running_router(workdir / "control") as router:
        port = configure(
            router,
            proxy_node,
            "BACKEND ADD b dc 127.0.0.1 {port} SEND-PROXY",
            "ACCEPT-PROXY FROM 127.0.0.1",
        )
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            connect(port, "no-header")
        wait_for(lambda: router.must("CONN") == "", timeout=WAIT, what="no session left")
        # Log lines are written by a background queue: wait for it, then count.
        wait_for(lambda: "failed to start" in router.stderr, timeout=WAIT, what="the log line")
        time.sleep(FLUSH_INTERVAL * 2)  # a second line, were there one, would be out too
        failed = [line for line in router.stderr.splitlines() if "failed to start" in line]
        assert len(failed) == 1 and "not a PROXY protocol header" in failed[0], router.stderr


@pytest.fixture(scope="module")
def proxy_tls_node(
    session_rabbit_node_factory: RabbitNodeFactory, tls_files: TlsFiles
) -> RabbitNode:
    """A node serving TLS too, with a PROXY header required (in clear, before TLS)."""
    node = session_rabbit_node_factory.create(start=False)
    node.tls = NodeTls(tls_files.ca, tls_files.server.chain, tls_files.server.key)
    node.extra_config = "proxy_protocol = true\n"
    node.start()
    tls = node.tls
    wait_for(lambda: port_is_open(tls.port, node.host), timeout=WAIT, what="the node's TLS port")
    return node


def test_tls_all_the_way_with_proxy_headers_in_clear_on_both_sides(
    proxy_tls_node: RabbitNode, haproxy_binary: str, tls_files: TlsFiles, workdir: Path
) -> None:
    """HAProxy passes TLS through with a v2 header first; the router reads the header,
    then the TLS handshake (START_SECURE ACCEPT-PROXY), and writes a v1 header before its
    own TLS handshake with the broker (SEND-PROXY TLS)."""
    assert proxy_tls_node.tls is not None
    with running_router(workdir / "control") as router:
        router.must("TLS INGRESS CERT_CHAIN_FILE", str(tls_files.server.chain))
        router.must("TLS INGRESS KEY_FILE", str(tls_files.server.key))
        router.must("TLS EGRESS CA_CERT_FILE", str(tls_files.ca))
        router.must("TLS EGRESS VERIFY_MODE PEER")
        router.must("BACKEND ADD b dc 127.0.0.1", proxy_tls_node.tls.port, "SEND-PROXY", "TLS")
        router.must("MAP BACKEND / b")
        router_port = free_port()
        router.must("LISTEN", "START_SECURE", router_port, "ACCEPT-PROXY", "FROM", "127.0.0.1")
        with haproxy(haproxy_binary, workdir, router_port, "send-proxy-v2") as front:
            name = f"px-tls-{time.monotonic_ns()}"
            context = tls_files.client_context()
            params = pika.ConnectionParameters(
                "127.0.0.1",
                front,
                ssl_options=pika.SSLOptions(context, server_hostname="localhost"),
                client_properties={"connection_name": name},
                connection_attempts=1,
                socket_timeout=WAIT,
            )
            connection = pika.BlockingConnection(params)
            try:
                client = client_socket_name(connection)
                assert conn_field(router, "ingressRemote") == f"{client[0]}:{client[1]}"
                assert broker_peer(proxy_tls_node, name) == client
                connection.channel().queue_declare("", exclusive=True)
            finally:
                connection.close()
        config = router.must("CONFIG PRINT")
        assert f"LISTEN START_SECURE {router_port} ACCEPT-PROXY FROM 127.0.0.1/32\n" in config


# --------------------------------------------------------------------------- #
# who may send a PROXY header
# --------------------------------------------------------------------------- #


def test_only_the_from_balancers_may_name_the_client(
    system_broker: SystemBroker, workdir: Path
) -> None:
    """The attack: on ``ACCEPT-PROXY FROM 127.0.0.2/32 ALLOW 10.0.0.0/8``, a client
    reaching the port straight from 127.0.0.1 names 10.66.66.66 in its own header. It is
    closed before a byte is read (no session, not even the AMQP header back), counted
    and logged. The balancer (127.0.0.2) is served for a client in 10.0.0.0/8, and
    refused by ALLOW for one outside it."""
    with running_router(workdir / "control") as router:
        router.must("BACKEND ADD b dc 127.0.0.1", system_broker.port)
        router.must("MAP BACKEND / b")
        port = free_port()
        router.must(
            "LISTEN", "START", port, "ACCEPT-PROXY", "FROM", "127.0.0.2/32", "ALLOW", "10.0.0.0/8"
        )

        with raw_client("127.0.0.1", port, header_from("10.66.66.66", port)) as attacker:
            assert read_all(attacker) == b""
        wait_for(
            lambda: "peer may not send a PROXY header" in router.stderr,
            timeout=WAIT,
            what="the refusal's log line",
        )
        assert "client='127.0.0.1:" in router.stderr
        assert router.must("CONN") == ""

        with raw_client("127.0.0.2", port, header_from("10.66.66.66", port)) as served:
            open_session(served)
            assert conn_field(router, "ingressRemote") == "10.66.66.66:40000"

        with raw_client("127.0.0.2", port, header_from("192.168.1.1", port)) as outside:
            assert read_all(outside) == b""
        wait_for(
            lambda: "client refused: address not allowed" in router.stderr,
            timeout=WAIT,
            what="the ALLOW refusal's log line",
        )
        assert "client='192.168.1.1:40000'" in router.stderr
        wait_for(lambda: router.must("CONN") == "", timeout=WAIT, what="no session left")
