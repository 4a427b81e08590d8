"""The TLS transport over real loopback TCP, with trio tasks on both ends."""

from __future__ import annotations

import socket
import ssl
import warnings
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from amqprouter.net import sockets
from amqprouter.net.tls_context import TlsSettings, VerifyMode, build_context
from amqprouter.net.tls_transport import TlsHandshakeError, TLSTransport, tls_handshake
from amqprouter.net.transport import Transport
from tests.tls_certs import TlsFiles

FIVE_MIB = 5 * 1024 * 1024
PAYLOAD = bytes(range(256)) * (FIVE_MIB // 256)


async def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """(server side, client side) of a fresh loopback connection, both non-blocking."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = await sockets.connect(listener.getsockname(), socket.AF_INET)
        server, _ = listener.accept()
    sockets.tune_socket(server)
    return server, client


def server_settings(files: TlsFiles, **changes: Any) -> TlsSettings:
    settings = TlsSettings(
        "INGRESS", cert_chain_file=str(files.server.chain), key_file=str(files.server.key)
    )
    return attrs.evolve(settings, **changes)


def client_settings(files: TlsFiles, **changes: Any) -> TlsSettings:
    settings = TlsSettings("EGRESS", ca_file=str(files.ca), verify_mode=(VerifyMode.PEER,))
    return attrs.evolve(settings, **changes)


async def connect_pair(
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    hostname: str = "localhost",
) -> tuple[TLSTransport, TLSTransport]:
    server_sock, client_sock = await tcp_pair()
    result: dict[str, TLSTransport] = {}

    async def serve() -> None:
        result["server"] = await tls_handshake(server_sock, server_context, server_side=True)

    async def client() -> None:
        result["client"] = await tls_handshake(
            client_sock, client_context, server_side=False, server_hostname=hostname
        )

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            nursery.start_soon(client)
    return result["server"], result["client"]


async def handshake_errors(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, hostname: str = "localhost"
) -> tuple[str | None, str | None]:
    """Both sides' TlsHandshakeError reasons (None: that side succeeded)."""
    server_sock, client_sock = await tcp_pair()
    reasons: dict[str, str | None] = {"server": None, "client": None}
    transports: list[TLSTransport] = []

    async def side(name: str, sock: socket.socket, context: ssl.SSLContext) -> None:
        try:
            transport = await tls_handshake(
                sock,
                context,
                server_side=name == "server",
                server_hostname=None if name == "server" else hostname,
            )
        except TlsHandshakeError as exc:
            reasons[name] = exc.reason
            assert sock.fileno() == -1  # detached into the closed SSL socket
            for other in transports:
                other.close()  # unblock the peer, as a session would
            return
        transports.append(transport)
        if name == "server":
            # TLS 1.3 clients finish before the server has checked their
            # certificate: the server's verdict arrives on the first read.
            await read_exactly(transport, 0)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(side, "server", server_sock, server_context)
            nursery.start_soon(side, "client", client_sock, client_context)
    for transport in transports:
        transport.close()
    return reasons["server"], reasons["client"]


async def read_exactly(transport: Transport, size: int, chunk: int = 256 * 1024) -> bytes:
    received = bytearray()
    while len(received) < size:
        try:
            data = transport.recv(min(chunk, size - len(received)))
        except BlockingIOError:
            await transport.wait_readable()
            continue
        if not data:
            raise AssertionError(f"EOF after {len(received)} of {size} bytes")
        received += data
    return bytes(received)


async def send_in(transport: Transport, data: bytes, write_size: int) -> None:
    view = memoryview(data)
    for start in range(0, len(view), write_size):
        await transport.send_all(view[start : start + write_size])
        if start % (64 * write_size) == 0:
            await trio.lowlevel.checkpoint()


async def test_handshake_and_peer_subject_with_mutual_tls(tls_files: TlsFiles) -> None:
    server_context = build_context(
        server_settings(
            tls_files,
            ca_file=str(tls_files.ca),
            verify_mode=(VerifyMode.PEER, VerifyMode.FAIL_IF_NO_PEER_CERT),
        )
    )
    client_context = build_context(
        client_settings(
            tls_files,
            cert_chain_file=str(tls_files.client.chain),
            key_file=str(tls_files.client.key),
        )
    )
    server, client = await connect_pair(server_context, client_context)
    try:
        assert server.peer_subject() is not None
        assert server.peer_subject().startswith("CN=client,")  # type: ignore[union-attr]
        assert "O=amqprouter tests" in server.peer_subject()  # type: ignore[operator]
        assert client.peer_subject() is not None  # verified server certificate
        assert server.tls_version() == "TLSv1.3"
        assert server.peer_name() == client.local_name()
    finally:
        server.close()
        client.close()
    # Statistics and CONN ask after a session ended: a closed transport still answers
    # (the SSL object is gone then; asking it crashed the statistics loop once).
    assert server.peer_subject() is not None and server.tls_version() == "TLSv1.3"


@pytest.mark.parametrize("write_size", [1000, 64 * 1024, FIVE_MIB])
async def test_five_mib_both_ways_byte_exact(tls_files: TlsFiles, write_size: int) -> None:
    server, client = await connect_pair(
        build_context(server_settings(tls_files)), build_context(client_settings(tls_files))
    )
    received: dict[str, bytes] = {}

    async def receive(name: str, transport: TLSTransport) -> None:
        received[name] = await read_exactly(transport, FIVE_MIB)

    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                # Both directions at once: neither side may wait for the other.
                nursery.start_soon(send_in, client, PAYLOAD, write_size)
                nursery.start_soon(send_in, server, PAYLOAD[::-1], write_size)
                nursery.start_soon(receive, "server", server)
                nursery.start_soon(receive, "client", client)
        assert received["server"] == PAYLOAD
        assert received["client"] == PAYLOAD[::-1]
        # A clean end of stream reads as b"".
        client.ssl_sock.unwrap()
    except ssl.SSLWantReadError:
        pass  # close_notify sent; not waiting for the server's
    finally:
        client.close()
    with trio.fail_after(10):
        while True:
            try:
                assert server.recv(100) == b""
                break
            except BlockingIOError:
                await server.wait_readable()
    server.close()


async def test_pending_data_is_read_without_waiting_on_the_socket(tls_files: TlsFiles) -> None:
    server, client = await connect_pair(
        build_context(server_settings(tls_files)), build_context(client_settings(tls_files))
    )
    try:
        await server.send_all(b"x" * 10_000)  # one TLS record
        first = await read_exactly(client, 10, chunk=10)
        # The rest of the record is decrypted inside OpenSSL, not in the kernel:
        # a wait on the file descriptor would never return.
        assert client.pending() == 10_000 - 10
        with trio.fail_after(5):
            await client.wait_readable()
        rest = await read_exactly(client, 10_000 - 10, chunk=10)
        assert first + rest == b"x" * 10_000
        assert client.pending() == 0
    finally:
        server.close()
        client.close()


async def test_send_pieces_joins(tls_files: TlsFiles) -> None:
    server, client = await connect_pair(
        build_context(server_settings(tls_files)), build_context(client_settings(tls_files))
    )
    try:
        await client.send_pieces([b"AMQP", memoryview(b"\x00\x00\x09\x01")])
        assert await read_exactly(server, 8) == b"AMQP\x00\x00\x09\x01"
    finally:
        server.close()
        client.close()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
async def test_version_pinned(tls_files: TlsFiles, version: str) -> None:
    client_context = build_context(client_settings(tls_files))
    tls_version = ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3
    client_context.minimum_version = client_context.maximum_version = tls_version
    server, client = await connect_pair(build_context(server_settings(tls_files)), client_context)
    assert server.tls_version() == client.tls_version() == f"TLSv{version}"
    server.close()
    client.close()


async def test_tls12_client_refused_by_13_minimum(tls_files: TlsFiles) -> None:
    client_context = build_context(client_settings(tls_files))
    client_context.maximum_version = ssl.TLSVersion.TLSv1_2
    server_reason, client_reason = await handshake_errors(
        build_context(server_settings(tls_files, min_version="1.3")), client_context
    )
    assert server_reason == "unsupported protocol"
    assert client_reason == "tlsv1 alert protocol version"


async def test_tls11_client_refused(tls_files: TlsFiles) -> None:
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    client_context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        client_context.minimum_version = ssl.TLSVersion.TLSv1_1
        client_context.maximum_version = ssl.TLSVersion.TLSv1_1
    server_reason, client_reason = await handshake_errors(
        build_context(server_settings(tls_files)), client_context
    )
    assert server_reason in ("unsupported protocol", "wrong version number")
    assert client_reason is not None


async def test_wrong_ca_refused(tls_files: TlsFiles) -> None:
    server_reason, client_reason = await handshake_errors(
        build_context(server_settings(tls_files)),
        build_context(client_settings(tls_files, ca_file=str(tls_files.other_ca))),
    )
    assert client_reason == "certificate verify failed: unable to get local issuer certificate"
    assert server_reason == "tlsv1 alert unknown ca"


async def test_wrong_host_name_refused(tls_files: TlsFiles) -> None:
    server_context = build_context(
        server_settings(
            tls_files,
            cert_chain_file=str(tls_files.wrong_name.chain),
            key_file=str(tls_files.wrong_name.key),
        )
    )
    _server_reason, client_reason = await handshake_errors(
        server_context, build_context(client_settings(tls_files))
    )
    assert client_reason == (
        "certificate verify failed: Hostname mismatch, certificate is not valid for 'localhost'"
    )


async def test_expired_refused(tls_files: TlsFiles) -> None:
    server_context = build_context(
        server_settings(
            tls_files,
            cert_chain_file=str(tls_files.expired.chain),
            key_file=str(tls_files.expired.key),
        )
    )
    _server_reason, client_reason = await handshake_errors(
        server_context, build_context(client_settings(tls_files))
    )
    assert client_reason == "certificate verify failed: certificate has expired"


async def test_client_without_certificate_refused_under_fail_if_no_peer_cert(
    tls_files: TlsFiles,
) -> None:
    server_context = build_context(
        server_settings(
            tls_files,
            ca_file=str(tls_files.ca),
            verify_mode=(VerifyMode.PEER, VerifyMode.FAIL_IF_NO_PEER_CERT),
        )
    )
    server_reason, _client_reason = await handshake_errors(
        server_context, build_context(client_settings(tls_files))
    )
    assert server_reason == "peer did not return a certificate"


async def test_egress_without_verification_accepts_any_certificate(tls_files: TlsFiles) -> None:
    server_context = build_context(
        server_settings(
            tls_files,
            cert_chain_file=str(tls_files.wrong_name.chain),
            key_file=str(tls_files.wrong_name.key),
        )
    )
    server, client = await connect_pair(server_context, build_context(TlsSettings("EGRESS")))
    assert client.peer_subject() is None  # not verified: no subject to report
    server.close()
    client.close()


async def test_plain_amqp_header_to_tls_server(tls_files: TlsFiles) -> None:
    server_sock, client_sock = await tcp_pair()
    client_sock.send(b"AMQP\x00\x00\x09\x01")
    with pytest.raises(TlsHandshakeError) as info, trio.fail_after(10):
        await tls_handshake(
            server_sock, build_context(server_settings(tls_files)), server_side=True
        )
    assert info.value.reason == "wrong version number"
    client_sock.close()


async def test_peer_gone_mid_handshake(tls_files: TlsFiles) -> None:
    server_sock, client_sock = await tcp_pair()
    client_sock.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
    client_sock.close()
    with pytest.raises(TlsHandshakeError) as info, trio.fail_after(10):
        await tls_handshake(
            server_sock, build_context(server_settings(tls_files)), server_side=True
        )
    assert info.value.reason in (
        "peer closed the connection during the TLS handshake",
        "unexpected eof while reading",
    )


async def test_peer_that_stops_mid_handshake_is_bounded_by_the_timeout(
    tls_files: TlsFiles, autojump_clock: trio.testing.MockClock
) -> None:
    server_sock, client_sock = await tcp_pair()
    client_sock.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # then nothing
    with trio.move_on_after(30) as scope:
        await tls_handshake(
            server_sock, build_context(server_settings(tls_files)), server_side=True
        )
    assert scope.cancelled_caught
    assert server_sock.fileno() == -1  # the transport closed what it owned
    client_sock.close()


async def test_two_tasks_waiting_on_one_direction_share_the_wait(tls_files: TlsFiles) -> None:
    # A read that must write (TLS 1.3 KeyUpdate reply) while the writer is parked on
    # a full buffer, or a write that must read: two tasks wait on one fd and
    # direction, which trio's wait_readable/wait_writable alone refuse.
    server, client = await connect_pair(
        build_context(server_settings(tls_files)), build_context(client_settings(tls_files))
    )
    woke: list[str] = []
    # Consume the TLS 1.3 session tickets, so that the socket is quiet.
    with pytest.raises(BlockingIOError):
        client.recv(100)

    async def reader() -> None:
        await client.wait_readable()
        woke.append("reader")

    async def writer_wanting_read() -> None:
        await client._park(writable=False)
        woke.append("writer")

    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(writer_wanting_read)
                await trio.testing.wait_all_tasks_blocked()
                assert woke == []
                await server.send_all(b"wake up")
        assert sorted(woke) == ["reader", "writer"]
        assert await read_exactly(client, 7) == b"wake up"
    finally:
        server.close()
        client.close()
