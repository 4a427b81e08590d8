"""TLS end to end: real clients (pika, aio-pika) through the router, real RabbitMQ.

TLS in: the router's TLS listener in front of the machine's plain broker.
TLS out: a private RabbitMQ node with a TLS listener behind the router.
Certificates are made per session with trustme (tests/tls_certs.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import select
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aio_pika
import pika
import pytest

from amqprouter.protocol import constants
from tests.brokers import NodeTls, RabbitNode, RabbitNodeFactory, free_port, wait_for
from tests.router import RouterProcess, running_router
from tests.tls_certs import TlsFiles

CTL = Path(sys.executable).parent / "amqprouter_ctl"
WAIT = 15.0
BIG = 5 * 1024 * 1024


def ctl(router: RouterProcess, *words: object) -> tuple[int, str]:
    result = subprocess.run(
        [str(CTL), str(router.stdout_path.parent / "control"), *map(str, words)],
        capture_output=True,
        text=True,
        timeout=WAIT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return result.returncode, result.stdout


def must(router: RouterProcess, *words: object) -> str:
    code, out = ctl(router, *words)
    assert code == 0, f"{words}: {out}\n{router.stderr}"
    return out


def stat_line(router: RouterProcess, *words: str) -> str:
    """The first line of ``STAT LISTEN words...`` (the stream is then ended)."""
    control = str(router.stdout_path.parent / "control")
    with subprocess.Popen(
        [str(CTL), control, "STAT", "LISTEN", *words],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    ) as stream:
        assert stream.stdout is not None
        try:
            ready, _, _ = select.select([stream.stdout], [], [], WAIT)
            assert ready, "no STAT LISTEN line within the wait"
            line = stream.stdout.readline()
            assert line, router.stderr[-3000:]
            return line
        finally:
            stream.kill()


def tls_flags(files: TlsFiles, port: int) -> list[str]:
    return [
        "--listen-tls-port",
        str(port),
        "--tls-cert-chain",
        str(files.server.chain),
        "--tls-key",
        str(files.server.key),
    ]


@contextmanager
def tls_router(files: TlsFiles, broker_port: int = 5672) -> Iterator[tuple[RouterProcess, int]]:
    tls_port = free_port()
    with running_router(broker_port, extra=tls_flags(files, tls_port)) as router:
        wait_for(lambda: _accepts(tls_port), timeout=WAIT, what="the TLS listener")
        yield router, tls_port


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def client_context(files: TlsFiles, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = files.client_context()
    if version is not None:
        context.minimum_version = context.maximum_version = version
    return context


def pika_params(
    port: int, context: ssl.SSLContext, vhost: str = "/", name: str = "tls-test"
) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        "127.0.0.1",
        port,
        virtual_host=vhost,
        ssl_options=pika.SSLOptions(context, server_hostname="localhost"),
        client_properties={"connection_name": name},
        blocked_connection_timeout=WAIT,
        socket_timeout=WAIT,
        stack_timeout=WAIT,
    )


def round_trip(params: pika.ConnectionParameters, body: bytes) -> None:
    """Publish ``body`` to a fresh queue and get it back, byte-exact."""
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.confirm_delivery()
        channel.basic_publish("", queue, body)
        deadline = time.monotonic() + WAIT
        while True:
            method, _props, got = channel.basic_get(queue, auto_ack=True)
            if method is not None:
                break
            assert time.monotonic() < deadline, "message never arrived"
            connection.sleep(0.02)
        assert len(got) == len(body)
        assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
    finally:
        connection.close()


def read_to_eof(raw: socket.socket) -> bytes:
    """Everything the router sends until it closes (bounded: WAIT per read)."""
    raw.settimeout(WAIT)
    data = b""
    try:
        while chunk := raw.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


# --------------------------------------------------------------------------- #
# TLS in
# --------------------------------------------------------------------------- #


def test_tls_in_carries_5_mib_both_ways_with_pika(tls_files: TlsFiles) -> None:
    with tls_router(tls_files) as (router, port):
        round_trip(pika_params(port, client_context(tls_files)), os.urandom(BIG))
        assert "TLS INGRESS CERT_CHAIN_FILE" in must(router, "CONFIG PRINT")
        assert f"LISTEN START_SECURE {port}" in must(router, "CONFIG PRINT")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_in_1_2_only_and_1_3_only_clients(tls_files: TlsFiles, version: ssl.TLSVersion) -> None:
    with tls_router(tls_files) as (_router, port):
        round_trip(pika_params(port, client_context(tls_files, version)), b"x" * 1000)


def test_tls_in_refuses_old_protocols(tls_files: TlsFiles) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(tls_files.ca)
    with warnings.catch_warnings():  # asking for TLS 1.0/1.1 is the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("ALL:@SECLEVEL=0")
    with (
        tls_router(tls_files) as (_router, port),
        socket.create_connection(("127.0.0.1", port), 5) as raw,
        pytest.raises(ssl.SSLError),
    ):
        context.wrap_socket(raw, server_hostname="localhost")


def test_tls_in_with_aio_pika(tls_files: TlsFiles) -> None:
    body = os.urandom(100_000)

    async def main() -> bytes:
        connection = await aio_pika.connect(
            host="127.0.0.1",
            port=port,
            ssl=True,
            ssl_context=client_context(tls_files),
            timeout=WAIT,
        )
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(exclusive=True)
            await channel.default_exchange.publish(aio_pika.Message(body), queue.name)
            message = await queue.get(timeout=WAIT, fail=True)
            assert message is not None
            await message.ack()
            return message.body

    with tls_router(tls_files) as (_router, port):
        assert asyncio.run(main()) == body


def test_mutual_tls_subject_in_conn_and_log(tls_files: TlsFiles) -> None:
    with tls_router(tls_files) as (router, port):
        must(router, "TLS INGRESS CA_CERT_FILE", tls_files.ca)
        must(router, "TLS INGRESS VERIFY_MODE PEER FAIL_IF_NO_PEER_CERT")
        # Without a certificate: refused in the TLS handshake.
        with pytest.raises((pika.exceptions.AMQPConnectionError, ssl.SSLError)):
            pika.BlockingConnection(pika_params(port, client_context(tls_files)))
        # With one: served, and the operator sees who it is.
        context = tls_files.client_context(with_cert=True)
        connection = pika.BlockingConnection(pika_params(port, context, name="mtls"))
        try:
            conn = must(router, "CONN")
            assert "clientCert=" in conn and "CN=client" in conn, conn
            assert "tls=TLSv1.3" in conn, conn
            # STAT's per-source axis names a certificate's client by its CN.
            stats = json.loads(stat_line(router, "json", "source=client@127.0.0.1"))
            assert stats["activeConnectionCount"] == 1, stats
        finally:
            connection.close()
        wait_for(lambda: "CN=client" in router.stderr, timeout=WAIT, what="the session log line")
        wait_for(lambda: must(router, "CONN") == "", timeout=WAIT, what="no session left")


def test_bad_input_on_tls_and_plain_ports_closes_cleanly(tls_files: TlsFiles) -> None:
    with tls_router(tls_files) as (router, port):
        # A plain AMQP header to the TLS port: no AMQP answer, a closed socket.
        with socket.create_connection(("127.0.0.1", port), 5) as raw:
            raw.sendall(constants.PROTOCOL_HEADER)
            assert not read_to_eof(raw).startswith(b"AMQP")
        # A ClientHello to the plain port: the AMQP header says what is spoken there.
        context = client_context(tls_files)
        with (
            socket.create_connection(("127.0.0.1", router.port), 5) as raw,
            pytest.raises((ssl.SSLError, ConnectionError)),
        ):
            context.wrap_socket(raw, server_hostname="localhost")
        # Garbage, and a client that stops halfway through its handshake.
        with socket.create_connection(("127.0.0.1", port), 5) as raw:
            raw.sendall(b"\x16\x03\x01\x00\xff" + b"\x00" * 20)  # a truncated ClientHello
            started = time.monotonic()
            read_to_eof(raw)
            assert time.monotonic() - started < WAIT
        wait_for(lambda: must(router, "CONN") == "", timeout=WAIT, what="no session left")
        wait_for(lambda: "TLS handshake failed" in router.stderr, timeout=WAIT, what="log")


# --------------------------------------------------------------------------- #
# TLS out: private nodes with a TLS listener
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def tls_node(session_rabbit_node_factory: RabbitNodeFactory, tls_files: TlsFiles) -> RabbitNode:
    """A node whose TLS certificate names localhost and 127.0.0.1."""
    tls = NodeTls(tls_files.ca, tls_files.server.chain, tls_files.server.key)
    return session_rabbit_node_factory.create_tls(tls)


@pytest.fixture(scope="module")
def wrong_name_node(
    session_rabbit_node_factory: RabbitNodeFactory, tls_files: TlsFiles
) -> RabbitNode:
    """A node whose certificate (by the right CA) names wrong.example.invalid only."""
    tls = NodeTls(tls_files.ca, tls_files.wrong_name.chain, tls_files.wrong_name.key)
    return session_rabbit_node_factory.create_tls(tls)


def tls_port(node: RabbitNode) -> int:
    assert node.tls is not None
    return node.tls.port


def egress_flags(files: TlsFiles, ca: Path | None = None) -> list[str]:
    return ["--destination-tls", "--tls-ca", str(ca or files.ca)]


def test_tls_out_verified_5_mib_both_ways(tls_node: RabbitNode, tls_files: TlsFiles) -> None:
    # The broker is named 127.0.0.1 (tests/router.py), which the certificate lists.
    with running_router(tls_port(tls_node), extra=egress_flags(tls_files)) as router:
        params = pika.ConnectionParameters("127.0.0.1", router.port, socket_timeout=WAIT)
        round_trip(params, os.urandom(BIG))
        assert "BACKEND ADD_DNS default-backend none 127.0.0.1" in must(router, "CONFIG PRINT")
        assert " TLS\n" in must(router, "BACKEND PRINT")


def test_tls_in_and_out(tls_node: RabbitNode, tls_files: TlsFiles) -> None:
    port = free_port()
    extra = egress_flags(tls_files) + tls_flags(tls_files, port)
    with running_router(tls_port(tls_node), extra=extra):
        wait_for(lambda: _accepts(port), timeout=WAIT, what="the TLS listener")
        round_trip(pika_params(port, client_context(tls_files)), os.urandom(BIG))


@pytest.mark.parametrize(
    ("node_fixture", "ca", "reason"),
    [
        # trustme's chain file carries its CA, which the wrong CA file does not trust
        ("tls_node", "other_ca", "certificate verify failed: self-signed certificate in"),
        ("wrong_name_node", "ca", "certificate verify failed: IP address mismatch"),
    ],
)
def test_tls_out_refuses_a_broker_it_cannot_verify(
    request: pytest.FixtureRequest, tls_files: TlsFiles, node_fixture: str, ca: str, reason: str
) -> None:
    node: RabbitNode = request.getfixturevalue(node_fixture)
    flags = egress_flags(tls_files, getattr(tls_files, ca))
    with running_router(tls_port(node), extra=flags) as router:
        params = pika.ConnectionParameters("127.0.0.1", router.port, socket_timeout=WAIT)
        with pytest.raises(pika.exceptions.AMQPConnectionError) as caught:
            pika.BlockingConnection(params)
        text = str(caught.value)
        assert "320" in text and "default-backend" in text and reason in text, text
        # A failed TLS handshake is a failed connect: passive health marks it down.
        assert "DOWN" in must(router, "BACKEND PRINT")
        wait_for(lambda: "TLS handshake failed" in router.stderr, timeout=WAIT, what="log")


def test_tls_out_fails_over_to_the_next_member(
    tls_node: RabbitNode, wrong_name_node: RabbitNode, tls_files: TlsFiles
) -> None:
    with running_router(tls_port(tls_node), extra=egress_flags(tls_files)) as router:
        must(router, "BACKEND ADD_DNS bad dc localhost", tls_port(wrong_name_node), "TLS")
        must(router, "BACKEND ADD_DNS good dc localhost", tls_port(tls_node), "TLS")
        must(router, "FARM ADD both round-robin bad good")
        must(router, "MAP FARM / both")
        params = pika.ConnectionParameters("127.0.0.1", router.port, socket_timeout=WAIT)
        for _ in range(3):
            round_trip(params, b"served by good")
        backends = must(router, "BACKEND PRINT")
        assert "bad (dc): localhost :" in backends and "DOWN (" in backends, backends


def test_ciphers_set_is_honoured(tls_files: TlsFiles) -> None:
    tls12 = ssl.TLSVersion.TLSv1_2
    chosen, other = "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384"
    with tls_router(tls_files) as (router, port):
        must(router, "TLS INGRESS CIPHERS SET", chosen)
        refused = client_context(tls_files, tls12)
        refused.set_ciphers(other)
        with pytest.raises((pika.exceptions.AMQPConnectionError, ssl.SSLError)):
            pika.BlockingConnection(pika_params(port, refused))
        served = client_context(tls_files, tls12)
        served.set_ciphers(chosen)
        round_trip(pika_params(port, served), b"cipher")
